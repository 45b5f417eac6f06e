package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer/model/safetensors"
)

func readLosses(t *testing.T, dir string) map[int]float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m struct {
			Kind string
			Step int
			Loss float64
		}
		if err := jsonUnmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		if m.Kind == "train" {
			if _, dup := out[m.Step]; dup {
				t.Fatalf("step %d logged twice in %s", m.Step, dir)
			}
			out[m.Step] = m.Loss
		}
	}
	return out
}

func readAdapter(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, n := range f.Names() {
		if out[n], err = f.Float32(n); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestResumeExact: 2N steps straight, versus N steps, a stop (as SIGTERM
// does: the context is cancelled), and --resume for the other N, give the
// bitwise same loss curve and adapter on the same world size.
func TestResumeExact(t *testing.T) {
	path := writeJSONL(t, 160)
	const N = 5
	base := testConfig(t, path)
	base.Steps, base.EvalEvery, base.ValFraction, base.Patience = 2*N, 3, 0.1, 0
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	straight := base
	straight.Out = t.TempDir()
	if _, err := RunJob(context.Background(), straight, be, &collective.Single{}, zap.NewNop(), JobIO{}); err != nil {
		t.Fatal(err)
	}

	split := base
	split.Out, split.CheckpointEvery = t.TempDir(), 2
	ctx, cancel := context.WithCancel(context.Background())
	_, err = RunJob(ctx, split, be, &collective.Single{}, zap.NewNop(), JobIO{OnStep: func(st StepStats) {
		if st.Step == N {
			cancel() // stop after step N, as a signal would
		}
	}})
	cancel()
	if err == nil || !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("stopped run: %v", err)
	}
	// A later, partial checkpoint (a crash while writing) must be skipped.
	if err := os.MkdirAll(filepath.Join(split.Out, "checkpoints", "step-000009"), 0o755); err != nil {
		t.Fatal(err)
	}
	split.Resume = true
	if _, err := RunJob(context.Background(), split, be, &collective.Single{}, zap.NewNop(), JobIO{}); err != nil {
		t.Fatal(err)
	}
	a, b := readLosses(t, straight.Out), readLosses(t, split.Out)
	if len(a) != 2*N || len(b) != 2*N {
		t.Fatalf("logged %d and %d steps, want %d", len(a), len(b), 2*N)
	}
	for s := 1; s <= 2*N; s++ {
		if a[s] != b[s] {
			t.Errorf("step %d: loss %v straight, %v resumed", s, a[s], b[s])
		}
	}
	x, y := readAdapter(t, straight.Out), readAdapter(t, split.Out)
	for name, v := range x {
		w := y[name]
		for i := range v {
			if v[i] != w[i] {
				t.Fatalf("%s[%d]: %v straight, %v resumed", name, i, v[i], w[i])
			}
		}
	}
}

// TestResumeRefusesOtherJob: a checkpoint of a different job is not resumed;
// the error names the setting that differs.
func TestResumeRefusesOtherJob(t *testing.T) {
	cfg := testConfig(t, writeJSONL(t, 80))
	cfg.CheckpointEvery = 2
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RunJob(context.Background(), cfg, be, &collective.Single{}, zap.NewNop(), JobIO{}); err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.Resume, other.LR = true, cfg.LR*2
	_, err = RunJob(context.Background(), other, be, &collective.Single{}, zap.NewNop(), JobIO{})
	if err == nil || !strings.Contains(err.Error(), "LR") {
		t.Fatalf("resuming another job: %v", err)
	}
}

func jsonUnmarshal(line string, v any) error { return json.Unmarshal([]byte(line), v) }
