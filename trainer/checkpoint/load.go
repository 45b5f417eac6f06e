package checkpoint

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"

	"go.uber.org/zap"

	"github.com/peertune/peertune/trainer/model/safetensors"
)

// Latest returns the newest valid checkpoint in dir and its trainer state.
// Every checkpoint newer than it that is invalid (no manifest: a partial
// write; a file missing, of the wrong size or the wrong SHA-256: corrupt) is
// reported on log as a warning with the reason, and skipped; so is every
// unfinished save (.tmp-* directory) newer than it. log may be nil.
//
// When there is no checkpoint at all (or dir does not exist) the error wraps
// ErrNoCheckpoint; when checkpoints exist but none is valid it wraps both
// ErrNoCheckpoint and ErrAllInvalid.
//
// Latest verifies every checksum; Load verifies again (the files are then in
// the page cache).
func Latest(dir string, log *zap.Logger) (path string, st State, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	entries, err := list(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", State{}, fmt.Errorf("%w in %s (the directory does not exist)", ErrNoCheckpoint, dir)
	}
	if err != nil {
		return "", State{}, fmt.Errorf("find checkpoints: %w", err)
	}
	// Unfinished saves are reported when newer than what is resumed.
	reportTmp := func(than int) {
		for _, e := range entries {
			if e.tmp && e.step > than {
				log.Warn(fmt.Sprintf("ignoring %s: an unfinished checkpoint write (crash during save?)", e.name),
					zap.String("path", filepath.Join(dir, e.name)))
			}
		}
	}
	invalid := 0
	for _, e := range entries {
		if e.tmp {
			continue
		}
		p := filepath.Join(dir, e.name)
		st, err := loadState(p, true)
		if err != nil {
			invalid++
			log.Warn(fmt.Sprintf("skipping checkpoint %s: %v", e.name, err), zap.String("path", p))
			continue
		}
		reportTmp(st.Step)
		return p, st, nil
	}
	reportTmp(-2)
	if invalid > 0 {
		return "", State{}, fmt.Errorf("%w in %s: %w: %d checkpoints, none valid (see the warnings)", ErrNoCheckpoint, dir, ErrAllInvalid, invalid)
	}
	return "", State{}, fmt.Errorf("%w in %s", ErrNoCheckpoint, dir)
}

// Load reads the checkpoint at path (a step-000123 directory) after verifying
// it in full: the manifest, every file's size and SHA-256, the trainer state,
// and the tensors (params, adam_m, adam_v and the optional best, all F32 of
// one length, the optional layout consistent with it). Every error names the
// checkpoint and the file.
func Load(path string) (State, Tensors, error) {
	st, err := loadState(path, true)
	if err != nil {
		return State{}, Tensors{}, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	t, err := loadTensors(filepath.Join(path, OptimizerFile))
	if err != nil {
		return State{}, Tensors{}, fmt.Errorf("load checkpoint %s: %s: %w", path, OptimizerFile, err)
	}
	return st, t, nil
}

// loadState verifies the checkpoint (fully: with hashes) and reads its state,
// cross-checking the step of the manifest, the state and the directory name.
func loadState(dir string, full bool) (State, error) {
	man, err := verify(dir, full)
	if err != nil {
		return State{}, err
	}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", StateFile, err)
	}
	st, err := decodeState(data)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", StateFile, err)
	}
	if st.Step != man.Step {
		return State{}, fmt.Errorf("%s says step %d, %s step %d", StateFile, st.Step, ManifestFile, man.Step)
	}
	if step, ok := parseStep(filepath.Base(dir)); ok && step != st.Step {
		return State{}, fmt.Errorf("directory %s holds step %d", filepath.Base(dir), st.Step)
	}
	return st, nil
}

// verify checks a checkpoint directory against its manifest: the manifest
// parses; it lists the state and optimizer files; every listed file exists as
// a regular file of the listed size; and, when full, has the listed SHA-256.
// Errors name the file and say what is wrong, e.g. "manifest.json missing
// (partial write?)" or "optimizer.safetensors: sha256 mismatch (corrupt)".
func verify(dir string, full bool) (Manifest, error) {
	man, err := readManifest(filepath.Join(dir, ManifestFile))
	if err != nil {
		return Manifest{}, err
	}
	for _, f := range man.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return Manifest{}, fmt.Errorf("%s missing (listed in %s)", f.Name, ManifestFile)
		case err != nil:
			return Manifest{}, fmt.Errorf("%s: %w", f.Name, err)
		case !fi.Mode().IsRegular():
			return Manifest{}, fmt.Errorf("%s: not a regular file", f.Name)
		case fi.Size() != f.Bytes:
			return Manifest{}, fmt.Errorf("%s: %d bytes, %s says %d (truncated or corrupt)", f.Name, fi.Size(), ManifestFile, f.Bytes)
		}
		if !full {
			continue
		}
		got, err := hashFile(p, false)
		if err != nil {
			return Manifest{}, fmt.Errorf("%s: %w", f.Name, err)
		}
		if got.Bytes != f.Bytes {
			return Manifest{}, fmt.Errorf("%s: read %d bytes, %s says %d (changed while reading?)", f.Name, got.Bytes, ManifestFile, f.Bytes)
		}
		if got.SHA256 != f.SHA256 {
			return Manifest{}, fmt.Errorf("%s: sha256 mismatch (corrupt)", f.Name)
		}
	}
	return man, nil
}

func readManifest(p string) (Manifest, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%s missing (partial write?)", ManifestFile)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	if len(data) > maxManifest {
		return Manifest{}, fmt.Errorf("%s: larger than %d MiB (corrupt)", ManifestFile, maxManifest>>20)
	}
	return parseManifest(data)
}

// parseManifest decodes and validates manifest.json.
func parseManifest(data []byte) (Manifest, error) {
	var man Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		return Manifest{}, fmt.Errorf("%s: invalid JSON (corrupt): %w", ManifestFile, err)
	}
	if man.FormatVersion != FormatVersion {
		return Manifest{}, fmt.Errorf("%s: format_version %d, this peertune reads %d", ManifestFile, man.FormatVersion, FormatVersion)
	}
	if man.Step < 0 {
		return Manifest{}, fmt.Errorf("%s: negative step %d (corrupt)", ManifestFile, man.Step)
	}
	seen := map[string]bool{}
	for _, e := range man.Files {
		switch {
		case e.Name == "" || !fs.ValidPath(e.Name) || path.Clean(e.Name) != e.Name || e.Name == ManifestFile:
			return Manifest{}, fmt.Errorf("%s: bad file name %q (corrupt)", ManifestFile, e.Name)
		case seen[e.Name]:
			return Manifest{}, fmt.Errorf("%s: %q listed twice (corrupt)", ManifestFile, e.Name)
		case e.Bytes < 0:
			return Manifest{}, fmt.Errorf("%s: %q has a negative size (corrupt)", ManifestFile, e.Name)
		}
		if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 {
			return Manifest{}, fmt.Errorf("%s: %q has a malformed sha256 (corrupt)", ManifestFile, e.Name)
		}
		seen[e.Name] = true
	}
	for _, need := range []string{StateFile, OptimizerFile} {
		if !seen[need] {
			return Manifest{}, fmt.Errorf("%s does not list %s (corrupt)", ManifestFile, need)
		}
	}
	return man, nil
}

// loadTensors reads optimizer.safetensors, insisting on exactly F32 [N]
// tensors (a bitwise round trip) and no unknown ones.
func loadTensors(p string) (Tensors, error) {
	f, err := safetensors.Open(p)
	if err != nil {
		return Tensors{}, err
	}
	defer f.Close()
	if got := f.Metadata["format"]; got != optFormat {
		return Tensors{}, fmt.Errorf("metadata format %q, want %q", got, optFormat)
	}
	for _, name := range f.Names() {
		if !slices.Contains([]string{TensorParams, TensorM, TensorV, TensorBest}, name) {
			return Tensors{}, fmt.Errorf("unexpected tensor %q", name)
		}
	}
	n := -1
	read := func(name string, optional bool) ([]float32, error) {
		in, ok := f.Info(name)
		if !ok {
			if optional {
				return nil, nil
			}
			return nil, fmt.Errorf("tensor %q missing", name)
		}
		if in.DType != safetensors.F32 {
			return nil, fmt.Errorf("tensor %q is %s, want F32", name, in.DType)
		}
		if len(in.Shape) != 1 {
			return nil, fmt.Errorf("tensor %q has shape %v, want one dimension", name, in.Shape)
		}
		if n >= 0 && in.Shape[0] != n {
			return nil, fmt.Errorf("tensor %q has %d elements, %q %d", name, in.Shape[0], TensorParams, n)
		}
		n = in.Shape[0]
		return f.Float32(name, in.Shape...)
	}
	var t Tensors
	if t.Params, err = read(TensorParams, false); err != nil {
		return Tensors{}, err
	}
	if t.M, err = read(TensorM, false); err != nil {
		return Tensors{}, err
	}
	if t.V, err = read(TensorV, false); err != nil {
		return Tensors{}, err
	}
	if t.Best, err = read(TensorBest, true); err != nil {
		return Tensors{}, err
	}
	if lay, ok := f.Metadata["layout"]; ok {
		if err := json.Unmarshal([]byte(lay), &t.Layout); err != nil {
			return Tensors{}, fmt.Errorf("metadata layout: %w", err)
		}
		if t.Layout == nil {
			t.Layout = []Span{}
		}
		if err := checkSpans(t.Layout, len(t.Params)); err != nil {
			return Tensors{}, err
		}
	}
	return t, nil
}
