package checkpoint

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/trainer/model/safetensors"
)

// FormatVersion is the checkpoint format this package writes and reads
// (manifest.json and trainer_state.json both carry it).
const FormatVersion = 1

// The files every checkpoint holds, besides whatever the adapter callback
// writes (adapter_config.json + adapter_model.safetensors for LoRA,
// config.json + model.safetensors for full fine-tuning).
const (
	StateFile     = "trainer_state.json"
	OptimizerFile = "optimizer.safetensors"
	ManifestFile  = "manifest.json" // written last: its presence marks a complete checkpoint
)

// Tensor names inside OptimizerFile. Every tensor is F32 with shape [N].
const (
	TensorParams = "params"
	TensorM      = "adam_m"
	TensorV      = "adam_v"
	TensorBest   = "best" // only when Tensors.Best is set
)

const (
	dirPrefix = "step-"
	tmpPrefix = ".tmp-" // .tmp-step-000123-<rand>: a checkpoint being written
	oldPrefix = ".old-" // .old-step-000123-<rand>: a replaced one being deleted
	optFormat = "peertune-optimizer"
	// maxManifest bounds the manifest read into memory (a garbage file must
	// not cost gigabytes).
	maxManifest = 16 << 20
)

var (
	// ErrNoCheckpoint: the directory holds no usable checkpoint.
	ErrNoCheckpoint = errors.New("no checkpoint")
	// ErrAllInvalid is wrapped (along with ErrNoCheckpoint) when checkpoints
	// exist but every one is invalid: a resume should stop rather than
	// silently start over.
	ErrAllInvalid = errors.New("every checkpoint is invalid")
)

// Tensors is the trainable state: the flat parameter buffer and AdamW's two
// moment buffers, all of one length N, and optionally the early-stopping best
// parameters (same length). The caller owns the slices; Save only reads them.
type Tensors struct {
	Params, M, V []float32
	Best         []float32 // nil: no best snapshot
	// Layout optionally names the regions of Params (model.TrainLayout);
	// Load checks it is consistent and returns it, CheckLayout compares it
	// with the model being resumed.
	Layout []Span
}

// Span is one named tensor inside the flat buffers.
type Span struct {
	Name   string `json:"name"`
	Offset int    `json:"offset"`
	Shape  []int  `json:"shape"`
}

// Size is the span's element count.
func (s Span) Size() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// Manifest is manifest.json: the checkpoint's table of contents, written
// last. A checkpoint is valid when its manifest parses and every file it
// lists exists with exactly the listed size and SHA-256.
type Manifest struct {
	FormatVersion int         `json:"format_version"`
	Step          int         `json:"step"`
	JobHash       string      `json:"job_hash,omitempty"`
	Created       time.Time   `json:"created"`
	Files         []FileEntry `json:"files"`
}

// FileEntry is one file of a checkpoint; Name is relative to the checkpoint
// directory, with forward slashes.
type FileEntry struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Options tune Save.
type Options struct {
	// Keep is how many of the newest valid checkpoints to keep, the one just
	// written included; older ones are deleted. 0 keeps every checkpoint.
	Keep int
	// Log reports what pruning deleted and any pruning failure (which does
	// not fail the save). nil logs nothing.
	Log *zap.Logger
}

// DirName is the directory name of step's checkpoint: step-000123.
func DirName(step int) string { return fmt.Sprintf("%s%06d", dirPrefix, step) }

// Save writes a checkpoint of step st.Step under dir (created if needed) and
// returns its path, dir/step-000123.
//
// Everything goes to dir/.tmp-step-000123-<rand>/ first: optimizer.safetensors
// (Tensors as F32, bitwise exact), the adapter through the callback (may be
// nil; it writes into the directory it is given, e.g. m.SaveAdapter or
// m.SaveBase, so the checkpoint is itself a loadable PEFT adapter or HF
// model), trainer_state.json, then manifest.json with every file's size and
// SHA-256. Every file and directory is fsynced, the directory is renamed to
// step-000123 (replacing a stale one of that step), and dir is fsynced: a
// crash leaves either no step-000123 or a complete one.
//
// Save then makes the new checkpoint the newest: checkpoints of later steps
// (an abandoned run's) are deleted. It keeps opt.Keep valid checkpoints in
// all (0: all) and deletes older or invalid ones and stale .tmp-* dirs; it
// never deletes the one just written. Validity while pruning is the cheap
// check (manifest parses, files present with the listed sizes), not a full
// re-hash. One writer per dir: Save is not safe for concurrent use on the
// same dir.
func Save(dir string, st State, t Tensors, adapter func(dir string) error, opt Options) (path string, err error) {
	if st.Step < 0 {
		return "", fmt.Errorf("save checkpoint: negative step %d", st.Step)
	}
	if err := t.validate(); err != nil {
		return "", fmt.Errorf("save checkpoint of step %d: %w", st.Step, err)
	}
	stateJSON, err := encodeState(st)
	if err != nil {
		return "", fmt.Errorf("save checkpoint of step %d: %s: %w", st.Step, StateFile, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	name := DirName(st.Step)
	final := filepath.Join(dir, name)
	tmp, err := os.MkdirTemp(dir, tmpPrefix+name+"-")
	if err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
			err = fmt.Errorf("save checkpoint %s: %w", final, err)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes 0700
		return "", err
	}

	optEntry, err := writeOptimizer(filepath.Join(tmp, OptimizerFile), t)
	if err != nil {
		return "", err
	}
	if adapter != nil {
		if err := adapter(tmp); err != nil {
			return "", fmt.Errorf("adapter: %w", err)
		}
	}
	if err := writeSynced(filepath.Join(tmp, StateFile), stateJSON); err != nil {
		return "", err
	}
	files, err := listAndHash(tmp, optEntry)
	if err != nil {
		return "", err
	}
	man := Manifest{FormatVersion: FormatVersion, Step: st.Step, JobHash: st.JobHash, Created: time.Now().UTC(), Files: files}
	manJSON, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return "", err
	}
	if err := writeSynced(filepath.Join(tmp, ManifestFile), append(manJSON, '\n')); err != nil {
		return "", err
	}
	if err := syncDir(tmp); err != nil {
		return "", err
	}

	// A checkpoint of this step may exist (a stale one from an abandoned run,
	// or an invalid one Latest skipped). Move it aside first: rename cannot
	// replace a non-empty directory.
	var old string
	if _, err := os.Lstat(final); err == nil {
		old = filepath.Join(dir, oldPrefix+name+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		if err := os.Rename(final, old); err != nil {
			return "", fmt.Errorf("move the existing %s aside: %w", name, err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if old != "" {
			os.Rename(old, final) // put the previous one back
		}
		return "", err
	}
	if err := syncDir(dir); err != nil {
		return "", err
	}
	if old != "" {
		os.RemoveAll(old)
	}
	prune(dir, st.Step, opt)
	return final, nil
}

func (t Tensors) validate() error {
	n := len(t.Params)
	if len(t.M) != n || len(t.V) != n {
		return fmt.Errorf("tensor lengths differ: params %d, adam_m %d, adam_v %d", n, len(t.M), len(t.V))
	}
	if t.Best != nil && len(t.Best) != n {
		return fmt.Errorf("best has %d elements, params %d", len(t.Best), n)
	}
	return checkSpans(t.Layout, n)
}

// checkSpans checks spans lie inside a buffer of n elements without overlap.
func checkSpans(spans []Span, n int) error {
	type iv struct{ lo, hi int }
	ivs := make([]iv, 0, len(spans))
	seen := make(map[string]bool, len(spans))
	for _, s := range spans {
		size := 1
		for _, d := range s.Shape {
			if d < 0 || (d > 0 && size > math.MaxInt/d) {
				return fmt.Errorf("layout: %q has a bad shape %v", s.Name, s.Shape)
			}
			size *= d
		}
		switch {
		case seen[s.Name]:
			return fmt.Errorf("layout: %q appears twice", s.Name)
		case s.Offset < 0 || size > n || s.Offset > n-size:
			return fmt.Errorf("layout: %q (offset %d, shape %v) lies outside the %d-element buffer", s.Name, s.Offset, s.Shape, n)
		}
		seen[s.Name] = true
		ivs = append(ivs, iv{s.Offset, s.Offset + size})
	}
	slices.SortFunc(ivs, func(a, b iv) int { return a.lo - b.lo })
	for i := 1; i < len(ivs); i++ {
		if ivs[i].lo < ivs[i-1].hi {
			return errors.New("layout: tensors overlap")
		}
	}
	return nil
}

// CheckLayout compares the layout stored in a checkpoint with want (the
// model's): same names, offsets and shapes, in order. A checkpoint saved
// without a layout passes.
func (t Tensors) CheckLayout(want []Span) error {
	if t.Layout == nil {
		return nil
	}
	if len(t.Layout) != len(want) {
		return fmt.Errorf("checkpoint layout has %d tensors, the model %d", len(t.Layout), len(want))
	}
	for i, s := range t.Layout {
		w := want[i]
		if s.Name != w.Name || s.Offset != w.Offset || !slices.Equal(s.Shape, w.Shape) {
			return fmt.Errorf("checkpoint tensor %d is %s %v at %d, the model's %s %v at %d", i, s.Name, s.Shape, s.Offset, w.Name, w.Shape, w.Offset)
		}
	}
	return nil
}

// writeOptimizer streams the tensors to path, hashing as it writes.
func writeOptimizer(path string, t Tensors) (FileEntry, error) {
	ts := []safetensors.Tensor{
		{Name: TensorParams, Shape: []int{len(t.Params)}, Data: t.Params},
		{Name: TensorM, Shape: []int{len(t.M)}, Data: t.M},
		{Name: TensorV, Shape: []int{len(t.V)}, Data: t.V},
	}
	if t.Best != nil {
		ts = append(ts, safetensors.Tensor{Name: TensorBest, Shape: []int{len(t.Best)}, Data: t.Best})
	}
	meta := map[string]string{"format": optFormat}
	if t.Layout != nil {
		lay, err := json.Marshal(t.Layout)
		if err != nil {
			return FileEntry{}, err
		}
		meta["layout"] = string(lay)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return FileEntry{}, err
	}
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	err = safetensors.Encode(bw, ts, safetensors.F32, meta)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return FileEntry{}, fmt.Errorf("write %s: %w", OptimizerFile, err)
	}
	return FileEntry{Name: OptimizerFile, Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n += int64(k)
	return k, err
}

// writeSynced writes a new file in a directory nobody else sees yet (the
// temporary checkpoint), so a plain create + fsync is atomic enough.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// listAndHash lists every file under root (the adapter callback's included),
// fsyncs files and subdirectories, and hashes every file but the already
// hashed optimizer file. Only regular files and directories are allowed.
func listAndHash(root string, opt FileEntry) ([]FileEntry, error) {
	var files []FileEntry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			if rel != "." {
				return syncDir(p)
			}
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: not a regular file (the adapter callback must write plain files)", rel)
		case rel == ManifestFile:
			return fmt.Errorf("%s: written by the adapter callback; the name is reserved", rel)
		case rel == OptimizerFile:
			files = append(files, opt)
			return nil
		}
		e, err := hashFile(p, true)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		e.Name = rel
		files = append(files, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b FileEntry) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

// hashFile streams a file through SHA-256; with sync it also fsyncs it (the
// adapter callback's files may not have been).
func hashFile(path string, sync bool) (FileEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileEntry{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return FileEntry{}, err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return FileEntry{}, err
		}
	}
	return FileEntry{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	// Some filesystems cannot fsync a directory (EINVAL, ENOTSUP); the
	// renames are then as durable as that filesystem makes them.
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// entry is one checkpoint-like name in a checkpoint directory.
type entry struct {
	name string
	step int
	tmp  bool // .tmp-* or .old-*: an unfinished write or an unfinished delete
}

// parseStep parses "step-000123" (any number of digits) into 123.
func parseStep(s string) (int, bool) {
	digits, ok := strings.CutPrefix(s, dirPrefix)
	if !ok || digits == "" {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

// list returns the checkpoints (and leftovers) in dir, newest step first.
// Names that are neither are ignored: dir may hold other things.
func list(dir string) ([]entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, d := range des {
		name := d.Name()
		if !d.IsDir() {
			continue
		}
		if step, ok := parseStep(name); ok {
			out = append(out, entry{name: name, step: step})
			continue
		}
		for _, p := range []string{tmpPrefix, oldPrefix} {
			if rest, ok := strings.CutPrefix(name, p); ok {
				// .tmp-step-000123-<rand>: the step is what precedes the last '-'.
				step := -1
				if i := strings.LastIndexByte(rest, '-'); i > 0 {
					if s, ok := parseStep(rest[:i]); ok {
						step = s
					}
				}
				out = append(out, entry{name: name, step: step, tmp: true})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b entry) int { return b.step - a.step })
	return out, nil
}

// prune enforces Save's retention rules after step's checkpoint was written.
// Failures are logged, never returned: the checkpoint itself is safe.
func prune(dir string, step int, opt Options) {
	log := opt.Log
	if log == nil {
		log = zap.NewNop()
	}
	entries, err := list(dir)
	if err != nil {
		log.Warn("checkpoint pruning: cannot list the directory", zap.String("dir", dir), zap.Error(err))
		return
	}
	kept := 1 // the one just written
	remove := func(e entry, why string, warn bool) {
		p := filepath.Join(dir, e.name)
		if err := os.RemoveAll(p); err != nil {
			log.Warn("checkpoint pruning: cannot delete", zap.String("path", p), zap.Error(err))
			return
		}
		if warn {
			log.Warn("deleted checkpoint "+e.name+": "+why, zap.String("path", p))
		} else {
			log.Info("deleted checkpoint "+e.name+": "+why, zap.String("path", p))
		}
	}
	for _, e := range entries {
		switch {
		case e.tmp:
			remove(e, "leftover of an interrupted save", false)
		case e.step == step:
			// the one just written
		case e.step > step:
			remove(e, fmt.Sprintf("newer than the step-%06d just written (an abandoned run)", step), false)
		default:
			if _, err := verify(filepath.Join(dir, e.name), false); err != nil {
				remove(e, "invalid: "+err.Error(), true)
			} else if opt.Keep > 0 && kept >= opt.Keep {
				remove(e, fmt.Sprintf("keeping the newest %d", opt.Keep), false)
			} else {
				kept++
			}
		}
	}
	if err := syncDir(dir); err != nil {
		log.Warn("checkpoint pruning", zap.Error(err))
	}
}
