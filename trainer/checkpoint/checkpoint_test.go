package checkpoint

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/peertune/peertune/trainer/model/safetensors"
)

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(core), logs
}

// warnings returns the messages of the Warn entries.
func warnings(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		out = append(out, e.Message)
	}
	return out
}

func requireWarning(t *testing.T, logs *observer.ObservedLogs, parts ...string) {
	t.Helper()
	for _, w := range warnings(logs) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w, p)
		}
		if ok {
			return
		}
	}
	t.Fatalf("no warning containing %q; warnings: %q", parts, warnings(logs))
}

// testTensors returns n-element tensors filled with awkward values: NaN with
// a payload, ±0, ±Inf, subnormals, and random bits.
func testTensors(n int, seed uint64, best bool) Tensors {
	rng := rand.New(rand.NewPCG(seed, 7))
	fill := func() []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(rng.Uint32())
		}
		specials := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)),
			math.Float32frombits(0x7fc00123), math.Float32frombits(1), math.Float32frombits(0x807fffff), math.MaxFloat32}
		copy(v, specials[:min(n, len(specials))])
		return v
	}
	t := Tensors{Params: fill(), M: fill(), V: fill(),
		Layout: []Span{{Name: "a", Offset: 0, Shape: []int{n / 2}}, {Name: "b", Offset: n / 2, Shape: []int{n - n/2, 1}}}}
	if best {
		t.Best = fill()
	}
	return t
}

func testState(step int) State {
	return State{
		Step: step, Epoch: float64(step) / 7, Seed: math.MaxUint64 - 3, JobHash: "abc123",
		ConfigJSON: json.RawMessage(`{"LR":0.002,"Steps":100,"Out":"out"}`),
		BestVal:    math.Inf(1), BestStep: 0, SinceBest: 2,
		WorldHistory: []WorldRecord{{Epoch: 1, Size: 3, FromStep: 1, Peers: []string{"a", "b", "c"}},
			{Epoch: 1<<63 + 5, Size: 2, FromStep: step, Peers: []string{"a", "c"}}},
		Extra: map[string]string{"val_loss_before": "2.5"},
	}
}

// fakeAdapter writes what m.SaveAdapter writes: a config and a safetensors file.
func fakeAdapter(params []float32) func(string) error {
	return func(dir string) error {
		if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(`{"peft_type":"LORA","r":4}`), 0o644); err != nil {
			return err
		}
		return safetensors.Write(filepath.Join(dir, "adapter_model.safetensors"),
			[]safetensors.Tensor{{Name: "w", Shape: []int{len(params)}, Data: params}}, safetensors.F32, map[string]string{"format": "pt"})
	}
}

func save(t *testing.T, dir string, step, keep int, log *zap.Logger) string {
	t.Helper()
	ts := testTensors(100, uint64(step), step%20 == 0)
	p, err := Save(dir, testState(step), ts, fakeAdapter(ts.Params), Options{Keep: keep, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}

func TestRoundTripBitwise(t *testing.T) {
	dir := t.TempDir()
	for _, best := range []bool{false, true} {
		want := testTensors(1001, 42, best)
		st := testState(123)
		if best {
			st.BestVal, st.BestStep = 1.2345678901234567, 120
		}
		p, err := Save(dir, st, want, fakeAdapter(want.Params), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(p) != "step-000123" {
			t.Fatalf("path %s", p)
		}
		gotSt, got, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name string
			a, b []float32
		}{{"params", got.Params, want.Params}, {"m", got.M, want.M}, {"v", got.V, want.V}, {"best", got.Best, want.Best}} {
			if !sameBits(c.a, c.b) {
				t.Errorf("best=%v: %s not bitwise equal after the round trip", best, c.name)
			}
		}
		if !slices.EqualFunc(got.Layout, want.Layout, func(a, b Span) bool {
			return a.Name == b.Name && a.Offset == b.Offset && slices.Equal(a.Shape, b.Shape)
		}) {
			t.Errorf("layout %v, want %v", got.Layout, want.Layout)
		}
		if err := got.CheckLayout(want.Layout); err != nil {
			t.Error(err)
		}
		if err := got.CheckLayout(want.Layout[:1]); err == nil {
			t.Error("CheckLayout accepted a different layout")
		}
		// JSON config is re-indented inside trainer_state.json; compare it semantically.
		if d := DiffJSON(st.ConfigJSON, gotSt.ConfigJSON); len(d) != 0 {
			t.Errorf("config differs: %v", d)
		}
		gotSt.ConfigJSON, st.ConfigJSON = nil, nil
		if !stateEqual(gotSt, st) {
			t.Errorf("state\n got %+v\nwant %+v", gotSt, st)
		}
		// The checkpoint is also the adapter directory.
		f, err := safetensors.Open(filepath.Join(p, "adapter_model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		w, err := f.Float32("w")
		f.Close()
		if err != nil || !sameBits(w, want.Params) {
			t.Errorf("adapter file: %v", err)
		}
		// The manifest lists every file.
		man, err := readManifest(filepath.Join(p, ManifestFile))
		if err != nil {
			t.Fatal(err)
		}
		var listed []string
		for _, e := range man.Files {
			listed = append(listed, e.Name)
		}
		if wantFiles := []string{"adapter_config.json", "adapter_model.safetensors", OptimizerFile, StateFile}; !slices.Equal(listed, wantFiles) {
			t.Errorf("manifest lists %v, want %v", listed, wantFiles)
		}
	}
	// Saving step 123 again replaced it; nothing else is left behind.
	if got := names(t, dir); !slices.Equal(got, []string{"step-000123"}) {
		t.Errorf("dir holds %v", got)
	}
}

func stateEqual(a, b State) bool {
	fa, fb := a.BestVal, b.BestVal
	a.BestVal, b.BestVal = 0, 0
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) && math.Float64bits(fa) == math.Float64bits(fb)
}

func TestNonFiniteFloatsRoundTrip(t *testing.T) {
	for _, v := range []float64{math.Inf(1), math.Inf(-1), math.NaN(), 0, -0.0, 5e-324, math.MaxFloat64, 1.0 / 3} {
		data, err := encodeState(State{BestVal: v, Epoch: v})
		if err != nil {
			t.Fatal(err)
		}
		st, err := decodeState(data)
		if err != nil {
			t.Fatalf("%v: %v\n%s", v, err, data)
		}
		if math.Float64bits(st.BestVal) != math.Float64bits(v) && !(math.IsNaN(v) && math.IsNaN(st.BestVal)) {
			t.Errorf("%v came back as %v", v, st.BestVal)
		}
	}
}

func TestKeepPruning(t *testing.T) {
	dir := t.TempDir()
	log, logs := observed()
	// A stale temporary dir from a crash, and an unrelated file and dir that
	// must survive.
	os.MkdirAll(filepath.Join(dir, ".tmp-step-000005-123"), 0o755)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, "other"), 0o755)
	for step := 10; step <= 60; step += 10 {
		save(t, dir, step, 3, log)
	}
	want := []string{"notes.txt", "other", "step-000040", "step-000050", "step-000060"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after keep=3: %v, want %v", got, want)
	}
	// An invalid checkpoint among the kept ones is deleted and does not count.
	os.Remove(filepath.Join(dir, "step-000050", ManifestFile))
	save(t, dir, 70, 3, log)
	requireWarning(t, logs, "step-000050", "manifest.json missing")
	want = []string{"notes.txt", "other", "step-000040", "step-000060", "step-000070"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after an invalid one: %v, want %v", got, want)
	}
	// Keep 0 keeps everything; keep 1 only the new one.
	save(t, dir, 80, 0, log)
	if got := names(t, dir); len(got) != 6 {
		t.Fatalf("keep=0: %v", got)
	}
	save(t, dir, 90, 1, log)
	if got := names(t, dir); !slices.Equal(got, []string{"notes.txt", "other", "step-000090"}) {
		t.Fatalf("keep=1: %v", got)
	}
}

func TestSaveRemovesNewerAndReplacesSameStep(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []int{10, 20, 30} {
		save(t, dir, s, 0, nil)
	}
	// Resuming from 10 (say 20 and 30 were judged bad) and saving 20 again:
	// 30 is an abandoned run's, the old 20 is replaced.
	ts := testTensors(100, 999, false)
	p, err := Save(dir, testState(20), ts, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"step-000010", "step-000020"}) {
		t.Fatalf("dir holds %v", got)
	}
	_, got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !sameBits(got.Params, ts.Params) {
		t.Error("step-000020 was not replaced")
	}
	lp, st, err := Latest(dir, nil)
	if err != nil || lp != p || st.Step != 20 {
		t.Fatalf("Latest = %s, step %d, %v", lp, st.Step, err)
	}
}

func TestPartialCheckpointSkipped(t *testing.T) {
	dir := t.TempDir()
	save(t, dir, 10, 0, nil)
	save(t, dir, 20, 0, nil)
	// A save never renames a directory without its manifest, but a copied or
	// half-deleted checkpoint looks like this:
	p30 := filepath.Join(dir, "step-000030")
	if err := os.MkdirAll(p30, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p30, OptimizerFile), []byte("half"), 0o644)
	// And a crash during the save of step 40 left its temporary directory.
	tmp := filepath.Join(dir, ".tmp-step-000040-8675309")
	os.MkdirAll(tmp, 0o755)
	os.WriteFile(filepath.Join(tmp, OptimizerFile), []byte("half"), 0o644)

	log, logs := observed()
	p, st, err := Latest(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "step-000020" || st.Step != 20 {
		t.Fatalf("Latest = %s (step %d), want step-000020", p, st.Step)
	}
	requireWarning(t, logs, "step-000030", "manifest.json missing (partial write?)")
	requireWarning(t, logs, ".tmp-step-000040-8675309", "unfinished")
	if n := len(warnings(logs)); n != 2 {
		t.Errorf("%d warnings, want 2: %q", n, warnings(logs))
	}
	// The next save cleans both up.
	save(t, dir, 30, 0, nil)
	if got := names(t, dir); !slices.Equal(got, []string{"step-000010", "step-000020", "step-000030"}) {
		t.Fatalf("dir holds %v", got)
	}
	if _, _, err := Load(filepath.Join(dir, "step-000030")); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if at < 0 {
		st, _ := f.Stat()
		at += st.Size()
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptCheckpointSkipped(t *testing.T) {
	cases := []struct {
		name    string
		damage  func(t *testing.T, p string)
		warning string
	}{
		{"optimizer bit flip", func(t *testing.T, p string) { flipByte(t, filepath.Join(p, OptimizerFile), -3) },
			"optimizer.safetensors: sha256 mismatch (corrupt)"},
		{"adapter bit flip", func(t *testing.T, p string) { flipByte(t, filepath.Join(p, "adapter_model.safetensors"), -1) },
			"adapter_model.safetensors: sha256 mismatch (corrupt)"},
		{"state bit flip", func(t *testing.T, p string) { flipByte(t, filepath.Join(p, StateFile), 20) },
			"trainer_state.json: sha256 mismatch (corrupt)"},
		{"truncated", func(t *testing.T, p string) { os.Truncate(filepath.Join(p, OptimizerFile), 100) },
			"optimizer.safetensors: 100 bytes"},
		{"file missing", func(t *testing.T, p string) { os.Remove(filepath.Join(p, "adapter_config.json")) },
			"adapter_config.json missing"},
		{"manifest garbage", func(t *testing.T, p string) {
			os.WriteFile(filepath.Join(p, ManifestFile), []byte(`{"format_vers`), 0o644)
		},
			"manifest.json: invalid JSON"},
		{"manifest step", func(t *testing.T, p string) { editManifest(t, p, func(m *Manifest) { m.Step = 7 }) },
			"trainer_state.json says step 20, manifest.json step 7"},
		{"future format", func(t *testing.T, p string) { editManifest(t, p, func(m *Manifest) { m.FormatVersion = 9 }) },
			"format_version 9"},
		{"path escape", func(t *testing.T, p string) {
			editManifest(t, p, func(m *Manifest) { m.Files[0].Name = "../step-000010/manifest.json" })
		}, "bad file name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			save(t, dir, 10, 0, nil)
			p20 := save(t, dir, 20, 0, nil)
			c.damage(t, p20)
			log, logs := observed()
			p, st, err := Latest(dir, log)
			if err != nil {
				t.Fatal(err)
			}
			if st.Step != 10 || filepath.Base(p) != "step-000010" {
				t.Fatalf("Latest = %s step %d, want step-000010", p, st.Step)
			}
			requireWarning(t, logs, "step-000020", c.warning)
			_, _, err = Load(p20)
			if err == nil || !strings.Contains(err.Error(), c.warning) || !strings.Contains(err.Error(), p20) {
				t.Fatalf("Load of the damaged checkpoint: %v; want an error naming %s and %q", err, p20, c.warning)
			}
		})
	}
}

// editManifest rewrites a checkpoint's manifest.
func editManifest(t *testing.T, p string, edit func(*Manifest)) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(p, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	data, _ = json.Marshal(m)
	if err := os.WriteFile(filepath.Join(p, ManifestFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rehash replaces a checkpoint file and updates the manifest to match, to
// reach the checks behind the checksums.
func rehash(t *testing.T, p, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := hashFile(filepath.Join(p, name), false)
	if err != nil {
		t.Fatal(err)
	}
	editManifest(t, p, func(m *Manifest) {
		for i := range m.Files {
			if m.Files[i].Name == name {
				m.Files[i].Bytes, m.Files[i].SHA256 = e.Bytes, e.SHA256
			}
		}
	})
}

func TestBadContentBehindValidChecksums(t *testing.T) {
	encode := func(ts []safetensors.Tensor, meta map[string]string) []byte {
		var b strings.Builder
		if err := safetensors.Encode(&b, ts, safetensors.F32, meta); err != nil {
			t.Fatal(err)
		}
		return []byte(b.String())
	}
	v := func(n int) []float32 { return make([]float32, n) }
	om := map[string]string{"format": optFormat}
	cases := []struct {
		name, file string
		data       []byte
		want       string
	}{
		{"truncated state JSON", StateFile, []byte(`{"format_version":1,"step":`), "trainer_state.json: invalid JSON"},
		{"state garbage", StateFile, []byte{0xff, 0, 1, 2}, "trainer_state.json: invalid JSON"},
		{"state wrong step", StateFile, mustState(t, 21), "trainer_state.json says step 21"},
		{"optimizer garbage", OptimizerFile, []byte("not a safetensors file at all"), "optimizer.safetensors"},
		{"lengths differ", OptimizerFile, encode([]safetensors.Tensor{{Name: "params", Shape: []int{4}, Data: v(4)},
			{Name: "adam_m", Shape: []int{4}, Data: v(4)}, {Name: "adam_v", Shape: []int{3}, Data: v(3)}}, om), `"adam_v" has 3 elements`},
		{"missing moment", OptimizerFile, encode([]safetensors.Tensor{{Name: "params", Shape: []int{4}, Data: v(4)},
			{Name: "adam_m", Shape: []int{4}, Data: v(4)}}, om), `"adam_v" missing`},
		{"2-D", OptimizerFile, encode([]safetensors.Tensor{{Name: "params", Shape: []int{2, 2}, Data: v(4)}}, om), "want one dimension"},
		{"unknown tensor", OptimizerFile, encode([]safetensors.Tensor{{Name: "params", Shape: []int{4}, Data: v(4)},
			{Name: "extra", Shape: []int{4}, Data: v(4)}}, om), `unexpected tensor "extra"`},
		{"not ours", OptimizerFile, encode([]safetensors.Tensor{{Name: "params", Shape: []int{4}, Data: v(4)}}, map[string]string{"format": "pt"}), "metadata format"},
		{"bad layout", OptimizerFile, encode([]safetensors.Tensor{{Name: "params", Shape: []int{4}, Data: v(4)},
			{Name: "adam_m", Shape: []int{4}, Data: v(4)}, {Name: "adam_v", Shape: []int{4}, Data: v(4)}},
			map[string]string{"format": optFormat, "layout": `[{"name":"a","offset":2,"shape":[3]}]`}), "outside the 4-element buffer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			save(t, dir, 10, 0, nil)
			p20 := save(t, dir, 20, 0, nil)
			rehash(t, p20, c.file, c.data)
			_, _, err := Load(p20)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.file) {
				t.Fatalf("Load: %v; want an error naming %s and %q", err, c.file, c.want)
			}
			if c.file == StateFile { // Latest reads the state: it must skip it too
				log, logs := observed()
				if p, _, err := Latest(dir, log); err != nil || filepath.Base(p) != "step-000010" {
					t.Fatalf("Latest = %s, %v", p, err)
				}
				requireWarning(t, logs, "step-000020", c.want)
			}
		})
	}
}

func mustState(t *testing.T, step int) []byte {
	data, err := encodeState(testState(step))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestNoCheckpoint(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{filepath.Join(dir, "absent"), dir} {
		_, _, err := Latest(d, nil)
		if !errors.Is(err, ErrNoCheckpoint) || errors.Is(err, ErrAllInvalid) {
			t.Fatalf("%s: %v, want ErrNoCheckpoint only", d, err)
		}
	}
	// Only an unfinished first save: nothing to resume, and a warning.
	os.MkdirAll(filepath.Join(dir, ".tmp-step-000010-1"), 0o755)
	log, logs := observed()
	if _, _, err := Latest(dir, log); !errors.Is(err, ErrNoCheckpoint) || errors.Is(err, ErrAllInvalid) {
		t.Fatalf("only a tmp dir: %v", err)
	}
	requireWarning(t, logs, ".tmp-step-000010-1")

	// All invalid.
	p10 := save(t, dir, 10, 0, nil)
	p20 := save(t, dir, 20, 0, nil)
	flipByte(t, filepath.Join(p10, OptimizerFile), 200)
	os.Remove(filepath.Join(p20, ManifestFile))
	log, logs = observed()
	_, _, err := Latest(dir, log)
	if !errors.Is(err, ErrNoCheckpoint) || !errors.Is(err, ErrAllInvalid) {
		t.Fatalf("all invalid: %v, want ErrNoCheckpoint and ErrAllInvalid", err)
	}
	requireWarning(t, logs, "step-000010", "sha256 mismatch")
	requireWarning(t, logs, "step-000020", "manifest.json missing")
}

func TestSaveFailuresLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	good := testTensors(10, 1, false)
	bad := good
	bad.V = bad.V[:9]
	if _, err := Save(dir, testState(5), bad, nil, Options{}); err == nil || !strings.Contains(err.Error(), "adam_v 9") {
		t.Fatalf("mismatched lengths: %v", err)
	}
	bad = good
	bad.Layout = []Span{{Name: "x", Offset: 8, Shape: []int{3}}}
	if _, err := Save(dir, testState(5), bad, nil, Options{}); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("bad layout: %v", err)
	}
	if _, err := Save(dir, testState(-1), good, nil, Options{}); err == nil {
		t.Fatal("negative step accepted")
	}
	st := testState(5)
	st.ConfigJSON = json.RawMessage(`{"unterminated`)
	if _, err := Save(dir, st, good, nil, Options{}); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Fatalf("invalid config JSON: %v", err)
	}
	boom := errors.New("disk full")
	_, err := Save(dir, testState(5), good, func(string) error { return boom }, Options{})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "adapter") {
		t.Fatalf("adapter failure: %v", err)
	}
	_, err = Save(dir, testState(5), good, func(d string) error { return os.Symlink("/etc/passwd", filepath.Join(d, "link")) }, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlink from the callback: %v", err)
	}
	_, err = Save(dir, testState(5), good, func(d string) error { return os.WriteFile(filepath.Join(d, ManifestFile), nil, 0o644) }, Options{})
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("callback writing the manifest: %v", err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("failed saves left %v", got)
	}
}

func TestCheckJob(t *testing.T) {
	st := testState(10)
	if err := st.CheckJob("abc123", nil); err != nil {
		t.Fatal(err)
	}
	err := st.CheckJob("def456", []byte(`{"LR":0.001,"Steps":100,"Out":"out","Pack":true}`))
	if !errors.Is(err, ErrJobMismatch) {
		t.Fatalf("%v", err)
	}
	for _, want := range []string{"LR 0.002 -> 0.001", "Pack (absent) -> true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Steps") {
		t.Errorf("error %q names an unchanged setting", err)
	}
	// Same config, different hash (the hash covers something else).
	err = st.CheckJob("def456", st.ConfigJSON)
	if !errors.Is(err, ErrJobMismatch) || !strings.Contains(err.Error(), "abc123") {
		t.Fatalf("%v", err)
	}
	st.ConfigJSON = nil
	if err := st.CheckJob("def456", []byte(`{}`)); !errors.Is(err, ErrJobMismatch) || !strings.Contains(err.Error(), "no config") {
		t.Fatalf("%v", err)
	}
}

func TestParseStep(t *testing.T) {
	for in, want := range map[string]int{"step-000123": 123, "step-0": 0, "step-1234567": 1234567} {
		if got, ok := parseStep(in); !ok || got != want {
			t.Errorf("%s: %d %v", in, got, ok)
		}
	}
	for _, in := range []string{"step-", "step-12a", "step--1", "Step-1", "step-+1", "step-99999999999999999999999"} {
		if _, ok := parseStep(in); ok {
			t.Errorf("%s parsed", in)
		}
	}
}

// FuzzDecode: no input makes the state or manifest decoders panic.
func FuzzDecode(f *testing.F) {
	data, _ := encodeState(testState(3))
	f.Add(data)
	f.Add([]byte(`{"format_version":1,"step":3,"epoch":"+Inf","best_val":"NaN"}`))
	f.Add([]byte(`{"format_version":1,"step":3,"files":[{"name":"a","bytes":1,"sha256":"00"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeState(b)
		parseManifest(b)
	})
}
