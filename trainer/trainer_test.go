package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/model"
)

// writeJSONL writes n distinct instruction examples and returns the path.
func writeJSONL(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"instruction":"Add %d and %d to the running total number %d","response":"%d"}`+"\n", i, i*7%13, i*31%97, i+i*7%13)
	}
	path := filepath.Join(t.TempDir(), "data.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func testConfig(t *testing.T, dataPath string) Config {
	c := DefaultConfig()
	c.Model, c.Init, c.Data = "tiny", "random", dataPath
	c.SeqLen, c.Batch, c.MicroBatch, c.Steps, c.Warmup = 96, 8, 8, 4, 1
	c.LoRARank, c.LoRAAlpha = 4, 8
	c.EvalEvery, c.EvalExamples = 0, 0
	c.Out = t.TempDir()
	return c
}

// newTestTrainer builds a trainer on the tiny preset, exactly as RunJob does.
func newTestTrainer(t *testing.T, cfg Config) *Trainer {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	src, err := ResolveModel(cfg.Model, cfg.Init, cfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := LoadDataset(&cfg, data.ByteTokenizer{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cfg.ModelOptions()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(be, src.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	if err := src.Load(m); err != nil {
		t.Fatal(err)
	}
	if opts.Method == model.MethodLoRA {
		if err := m.InitLoRA(cfg.Seed); err != nil {
			t.Fatal(err)
		}
		// Non-zero B so that the adapters' gradients all flow.
		host := make([]float32, m.Params.Len())
		if err := be.CopyOut(host, m.Params); err != nil {
			t.Fatal(err)
		}
		for i := range host {
			if host[i] == 0 {
				host[i] = float32(math.Sin(float64(i))) * 0.05
			}
		}
		if err := be.CopyIn(m.Params, host); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := New(cfg, m, &collective.Single{}, data.ByteTokenizer{}, ds, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func params(t *testing.T, tr *Trainer) []float32 {
	t.Helper()
	p := make([]float32, tr.m.Params.Len())
	if err := tr.m.Backend().CopyOut(p, tr.m.Params); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAccumulationEquivalence: 8 micro-batches of 1 accumulated give the same
// update as one micro-batch of 8, because every micro-batch's loss is scaled by
// the step's global target count.
func TestAccumulationEquivalence(t *testing.T) {
	path := writeJSONL(t, 120)
	for _, method := range []string{"lora", "full"} {
		var got [2][]float32
		var losses [2][]float64
		for i, mb := range []int{8, 1} {
			cfg := testConfig(t, path)
			cfg.Method, cfg.MicroBatch = method, mb
			tr := newTestTrainer(t, cfg)
			for step := 1; step <= 3; step++ {
				st, err := tr.Step(context.Background(), step)
				if err != nil {
					t.Fatal(err)
				}
				losses[i] = append(losses[i], st.Loss)
			}
			got[i] = params(t, tr)
		}
		for s := range losses[0] {
			if rel := math.Abs(losses[0][s]-losses[1][s]) / losses[0][s]; rel > 1e-5 {
				t.Errorf("%s step %d: loss %g (mb 8) vs %g (mb 1)", method, s+1, losses[0][s], losses[1][s])
			}
		}
		var maxDiff, maxAbs float64
		for i := range got[0] {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got[0][i]-got[1][i])))
			maxAbs = math.Max(maxAbs, math.Abs(float64(got[0][i])))
		}
		if maxDiff/maxAbs > 1e-4 {
			t.Errorf("%s: parameters after 3 steps differ by %.3g (relative %.3g)", method, maxDiff, maxDiff/maxAbs)
		}
	}
}

// TestEarlyStoppingAndBestRestore: with a learning rate too high to help, the
// validation loss stops improving; training stops after `patience`
// evaluations and the parameters of the best evaluation are restored.
func TestEarlyStoppingAndBestRestore(t *testing.T) {
	cfg := testConfig(t, writeJSONL(t, 200))
	cfg.Steps, cfg.EvalEvery, cfg.Patience, cfg.LR, cfg.Warmup, cfg.GradClip = 40, 1, 2, 0.5, 0, 0
	cfg.ValFraction = 0.2
	tr := newTestTrainer(t, cfg)
	var evals []EvalResult
	var snapshots [][]float32
	res, err := tr.Run(context.Background(), Hooks{OnEval: func(er EvalResult) {
		evals = append(evals, er)
		snapshots = append(snapshots, params(t, tr))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.StoppedEarly || res.Steps >= cfg.Steps {
		t.Fatalf("did not stop early: %+v", res)
	}
	// It stopped exactly `patience` evaluations after the best one.
	bestIdx := -1
	for i, e := range evals {
		if e.Best {
			bestIdx = i
		}
	}
	if len(evals)-1-bestIdx != cfg.Patience {
		t.Fatalf("stopped %d evaluations after the best, patience %d", len(evals)-1-bestIdx, cfg.Patience)
	}
	if evals[bestIdx].Step != res.BestStep {
		t.Fatalf("best step %d, evaluations say %d", res.BestStep, evals[bestIdx].Step)
	}
	final := params(t, tr)
	for i := range final {
		if final[i] != snapshots[bestIdx][i] {
			t.Fatalf("parameters were not restored to the best evaluation (index %d)", i)
		}
	}
	vl, err := tr.ValLoss(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if vl != res.BestVal {
		t.Fatalf("validation loss after restore %g, best %g", vl, res.BestVal)
	}
}

// TestRunJobWritesOutputs runs a whole small LoRA job and checks the files a
// user relies on.
func TestRunJobWritesOutputs(t *testing.T) {
	cfg := testConfig(t, writeJSONL(t, 80))
	cfg.EvalEvery = 2
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sum, err := RunJob(context.Background(), cfg, be, &collective.Single{}, zap.NewNop(), JobIO{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("trainable params: %s || all params: %s || trainable%%: ", commas(sum.TrainableParams), commas(sum.AllParams))) {
		t.Errorf("PEFT line missing from output:\n%s", out.String())
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "summary.json"} {
		if _, err := os.Stat(filepath.Join(cfg.Out, f)); err != nil {
			t.Errorf("missing output: %v", err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var trainLines, evalLines int
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("metrics.jsonl line %q: %v", line, err)
		}
		switch m["kind"] {
		case "train":
			trainLines++
			for _, k := range []string{"step", "loss", "lr", "tokens_per_s"} {
				if _, ok := m[k]; !ok {
					t.Errorf("train line lacks %q: %s", k, line)
				}
			}
		case "eval":
			evalLines++
		}
	}
	if trainLines != cfg.Steps || evalLines != cfg.Steps/cfg.EvalEvery {
		t.Errorf("metrics.jsonl: %d train and %d eval lines, want %d and %d", trainLines, evalLines, cfg.Steps, cfg.Steps/cfg.EvalEvery)
	}
	var s map[string]any
	raw, _ = os.ReadFile(filepath.Join(cfg.Out, "summary.json"))
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"steps", "final_loss", "tokens_per_s", "trainable_params", "all_params", "eval"} {
		if _, ok := s[k]; !ok {
			t.Errorf("summary.json lacks %q", k)
		}
	}
	ev := s["eval"].(map[string]any)
	for _, k := range []string{"exact_match_before", "exact_match_after", "format_accuracy_before", "format_accuracy_after", "val_loss_before", "val_loss_after"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("summary.json eval lacks %q", k)
		}
	}
	lc, err := model.ReadPEFTConfig(filepath.Join(cfg.Out, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if lc.Rank != cfg.LoRARank || lc.Alpha != cfg.LoRAAlpha || len(lc.Targets) != 7 {
		t.Errorf("adapter_config.json round trip: %+v", lc)
	}
}

// TestBadInputsFailBeforeTraining: each bad setting or file is an error that
// names what is wrong, before any step runs.
func TestBadInputsFailBeforeTraining(t *testing.T) {
	good := writeJSONL(t, 40)
	dir := t.TempDir()
	malformed := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(malformed, []byte(`{"instruction":"a","response":"b"}`+"\n"+`{"instruction": oops}`+"\n"), 0o644)
	long := filepath.Join(dir, "long.jsonl")
	os.WriteFile(long, []byte(`{"instruction":"`+strings.Repeat("x", 500)+`","response":"y"}`+"\n"), 0o644)
	empty := filepath.Join(dir, "empty.jsonl")
	os.WriteFile(empty, []byte("\n\n"), 0o644)
	cases := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"rank 0", func(c *Config) { c.LoRARank = 0 }, "--lora-rank 0"},
		{"negative lr", func(c *Config) { c.LR = -1 }, "--lr -1"},
		{"unknown target", func(c *Config) { c.LoRATargets = "q_proj,qkv" }, "valid: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
		{"unknown method", func(c *Config) { c.Method = "qlora4" }, "--method"},
		{"malformed line", func(c *Config) { c.Data = malformed }, "bad.jsonl:2: invalid JSON"},
		{"too long", func(c *Config) { c.Data = long }, "long.jsonl:1"},
		{"empty dataset", func(c *Config) { c.Data = empty }, "empty.jsonl"},
		{"unknown format", func(c *Config) { c.Format = "csv" }, "csv"},
		{"missing file", func(c *Config) { c.Data = filepath.Join(dir, "nope.jsonl") }, "nope.jsonl"},
		{"seq-len beyond model", func(c *Config) { c.SeqLen = 100000 }, "--seq-len 100000"},
		{"preset without weights", func(c *Config) { c.Init = "pretrained" }, "--init random"},
		{"warmup", func(c *Config) { c.Warmup = -2 }, "--warmup -2"},
	}
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, good)
			tc.edit(&cfg)
			steps := 0
			_, err := RunJob(context.Background(), cfg, be, &collective.Single{}, zap.NewNop(), JobIO{OnStep: func(StepStats) { steps++ }})
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if steps != 0 {
				t.Fatalf("%d steps ran before the error", steps)
			}
		})
	}
}

func TestConfigYAMLUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "job.yaml")
	os.WriteFile(path, []byte("lora_rank: 8\nlearning_rate: 3\n"), 0o644)
	c := DefaultConfig()
	err := c.LoadYAML(path)
	if err == nil || !strings.Contains(err.Error(), "learning_rate") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(path, []byte("lora_rank: 8\nlr: 0.01\n"), 0o644)
	c = DefaultConfig()
	if err := c.LoadYAML(path); err != nil {
		t.Fatal(err)
	}
	if c.LoRARank != 8 || c.LR != 0.01 || c.Method != "lora" {
		t.Fatalf("yaml not applied over defaults: %+v", c)
	}
}

func TestParamLine(t *testing.T) {
	// llama3-8b with r=16 on q,k,v,o: PEFT prints exactly this.
	got := ParamLine(13631488, 8043892736)
	want := "trainable params: 13,631,488 || all params: 8,043,892,736 || trainable%: 0.1695"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
