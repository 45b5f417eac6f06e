package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/internal/atomicfile"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/model"
	"github.com/peertune/peertune/trainer/model/safetensors"
	"github.com/peertune/peertune/trainer/tinybase"
)

// Summary is summary.json: what a run did and how well it ended.
type Summary struct {
	Model           string      `json:"model"`
	Method          string      `json:"method"`
	Steps           int         `json:"steps"`
	PlannedSteps    int         `json:"planned_steps"`
	StoppedEarly    bool        `json:"stopped_early"`
	BestStep        int         `json:"best_step,omitempty"`
	FinalLoss       float64     `json:"final_loss"`
	TokensPerSec    float64     `json:"tokens_per_s"`
	TrainableParams int         `json:"trainable_params"`
	AllParams       int         `json:"all_params"`
	WorldSize       int         `json:"world_size"`
	Backend         string      `json:"backend"`
	Seconds         float64     `json:"seconds"`
	Examples        any         `json:"examples"`
	SkippedLines    int         `json:"skipped_invalid_lines"`
	Truncated       int         `json:"truncated_examples"`
	Eval            SummaryEval `json:"eval"`
	Output          string      `json:"output"`
}

// SummaryEval compares the model before and after training on held-out data.
// Accuracies are fractions in [0,1]; null when the data has no scorer.
type SummaryEval struct {
	ExactMatchBefore     *float64 `json:"exact_match_before"`
	ExactMatchAfter      *float64 `json:"exact_match_after"`
	FormatAccuracyBefore *float64 `json:"format_accuracy_before"`
	FormatAccuracyAfter  *float64 `json:"format_accuracy_after"`
	ValLossBefore        *float64 `json:"val_loss_before"`
	ValLossAfter         *float64 `json:"val_loss_after"`
	Examples             int      `json:"examples_scored"`
}

// ModelSource resolves --model/--init into an architecture and a way to fill
// the base weights.
type ModelSource struct {
	Name   string
	Config model.Config
	// Load fills m's base weights.
	Load func(m *model.Model) error
}

// ResolveModel understands "builtin" (the shipped tiny model), a preset name
// (random weights with --init random), and a directory holding config.json
// and model.safetensors.
func ResolveModel(name, init string, seed uint64) (ModelSource, error) {
	random := init == "random"
	if name == BuiltinModel {
		cfgJSON, weights := tinybase.Files()
		cfg, err := model.ParseHFConfig("builtin/config.json", cfgJSON)
		if err != nil {
			return ModelSource{}, err
		}
		src := ModelSource{Name: name, Config: cfg}
		src.Load = func(m *model.Model) error {
			if random {
				return m.InitBase(seed)
			}
			f, err := safetensors.Parse("builtin/model.safetensors", weights)
			if err != nil {
				return err
			}
			return m.LoadBaseFile(f)
		}
		return src, nil
	}
	if cfg, ok := model.Presets()[name]; ok {
		if !random {
			return ModelSource{}, fmt.Errorf("--model %s is an architecture preset without weights: pass --init random to train it from scratch, or a directory with config.json and model.safetensors", name)
		}
		return ModelSource{Name: name, Config: cfg, Load: func(m *model.Model) error { return m.InitBase(seed) }}, nil
	}
	st, err := os.Stat(name)
	if err != nil {
		return ModelSource{}, fmt.Errorf("--model %q: not %q, not a preset (%s), and not a directory: %w", name, BuiltinModel, strings.Join(model.PresetNames(), ", "), err)
	}
	dir := name
	if !st.IsDir() {
		dir = filepath.Dir(name)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return ModelSource{}, fmt.Errorf("--model %s: %w", name, err)
	}
	cfg, err := model.ParseHFConfig(filepath.Join(dir, "config.json"), raw)
	if err != nil {
		return ModelSource{}, err
	}
	weights := filepath.Join(dir, "model.safetensors")
	return ModelSource{Name: name, Config: cfg, Load: func(m *model.Model) error {
		if random {
			return m.InitBase(seed)
		}
		return m.LoadBase(weights)
	}}, nil
}

// ModelOptions turns the job's method flags into model options.
func (c *Config) ModelOptions() (model.Options, error) {
	meth, err := model.ParseMethod(c.Method)
	if err != nil {
		return model.Options{}, err
	}
	o := model.Options{Method: meth, Recompute: c.Recompute}
	if meth == model.MethodLoRA {
		tg, err := model.ParseTargets(c.LoRATargets)
		if err != nil {
			return model.Options{}, err
		}
		o.LoRA = model.LoRAConfig{Rank: c.LoRARank, Alpha: c.LoRAAlpha, Dropout: c.LoRADropout, Targets: tg}
	}
	return o, nil
}

// ParamLine is PEFT's print_trainable_parameters line.
func ParamLine(trainable, all int) string {
	return fmt.Sprintf("trainable params: %s || all params: %s || trainable%%: %.4f",
		commas(trainable), commas(all), 100*float64(trainable)/float64(all))
}

func commas(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// JobIO is where a job reports: the PEFT line and the before/after table go to
// Stdout; step progress to OnStep (a progress bar or log lines).
type JobIO struct {
	Stdout io.Writer
	OnStep func(StepStats)
}

// RunJob runs a whole job on one rank: load model and data, evaluate, train,
// evaluate again, and (on rank 0) write the outputs to cfg.Out.
func RunJob(ctx context.Context, cfg Config, be kernels.Backend, comm collective.Communicator, log *zap.Logger, jio JobIO) (*Summary, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src, err := ResolveModel(cfg.Model, cfg.Init, cfg.Seed)
	if err != nil {
		return nil, err
	}
	if cfg.SeqLen > src.Config.MaxPositions {
		return nil, fmt.Errorf("--seq-len %d exceeds the model's max_position_embeddings %d", cfg.SeqLen, src.Config.MaxPositions)
	}
	tok := data.ByteTokenizer{}
	if tok.VocabSize() > src.Config.Vocab {
		return nil, fmt.Errorf("model %s has a vocabulary of %d, smaller than the byte tokenizer's %d", src.Name, src.Config.Vocab, tok.VocabSize())
	}
	ds, err := LoadDataset(&cfg, tok, log)
	if err != nil {
		return nil, err
	}
	log.Info("data", zap.String("data", cfg.Data), zap.Int("train", len(ds.Train)), zap.Int("val", len(ds.Val)), zap.Int("test", len(ds.Test)),
		zap.Int("train_target_tokens", ds.Encoded.TargetTokens), zap.Int("overlap", len(ds.Overlap.Matches)))
	opts, err := cfg.ModelOptions()
	if err != nil {
		return nil, err
	}
	m, err := model.New(be, src.Config, opts)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	if err := src.Load(m); err != nil {
		return nil, fmt.Errorf("load model %s: %w", src.Name, err)
	}
	if opts.Method == model.MethodLoRA {
		if err := m.InitLoRA(cfg.Seed); err != nil {
			return nil, err
		}
	}
	if jio.Stdout == nil {
		jio.Stdout = io.Discard
	}
	fmt.Fprintln(jio.Stdout, ParamLine(m.TrainableParams(), m.AllParams()))
	tr, err := New(cfg, m, comm, tok, ds, log)
	if err != nil {
		return nil, err
	}
	lead := comm.Rank() == 0
	var metrics *jsonlWriter
	if lead {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, fmt.Errorf("--out: %w", err)
		}
		if metrics, err = newJSONLWriter(filepath.Join(cfg.Out, "metrics.jsonl")); err != nil {
			return nil, err
		}
		defer metrics.Close()
	}
	sum := &Summary{Model: src.Name, Method: cfg.Method, PlannedSteps: tr.TotalSteps(), TrainableParams: m.TrainableParams(),
		AllParams: m.AllParams(), WorldSize: comm.Size(), Backend: be.Name(), Examples: ds.Examples,
		SkippedLines: ds.Read.Skipped, Truncated: ds.Encoded.Truncated}
	scored := ds.Scored && cfg.EvalExamples > 0 && len(ds.Test) > 0
	testSet := ds.Test[:min(len(ds.Test), cfg.EvalExamples)]
	evalAll := func(when string) (vl float64, sc TaskScore, err error) {
		t0 := time.Now()
		if vl, err = tr.ValLoss(ctx); err != nil {
			return 0, sc, err
		}
		if scored {
			if sc, err = ScoreExamples(m, tok, testSet, cfg.SeqLen); err != nil {
				return 0, sc, err
			}
		}
		log.Info("evaluation "+when, zap.Float64("val_loss", vl), zap.Float64("exact_match", sc.ExactMatch),
			zap.Float64("format_accuracy", sc.FormatAccuracy), zap.Int("scored", sc.N), zap.Duration("took", time.Since(t0)))
		return vl, sc, nil
	}
	vlBefore, scBefore, err := evalAll("before training")
	if err != nil {
		return nil, err
	}
	onStep := func(st StepStats) {
		if metrics != nil {
			metrics.write(map[string]any{"kind": "train", "step": st.Step, "epoch": st.Epoch, "loss": st.Loss, "lr": st.LR,
				"grad_norm": st.GradNorm, "tokens": st.Tokens, "tokens_per_s": st.TokensPerSec, "step_seconds": st.Elapsed.Seconds(),
				"allreduce_seconds": st.AllReduce.Seconds()})
		}
		if jio.OnStep != nil {
			jio.OnStep(st)
		}
	}
	onEval := func(er EvalResult) {
		if metrics != nil {
			metrics.write(map[string]any{"kind": "eval", "step": er.Step, "val_loss": er.ValLoss, "best": er.Best})
		}
		log.Info("validation", zap.Int("step", er.Step), zap.Float64("val_loss", er.ValLoss), zap.Bool("best", er.Best))
	}
	res, err := tr.Run(ctx, onStep, onEval)
	if err != nil {
		return nil, err
	}
	vlAfter, scAfter, err := evalAll("after training")
	if err != nil {
		return nil, err
	}
	sum.Steps, sum.StoppedEarly, sum.FinalLoss, sum.TokensPerSec = res.Steps, res.StoppedEarly, res.FinalLoss, res.TokensPerSec
	sum.BestStep = res.BestStep
	sum.Eval = SummaryEval{ValLossBefore: num(vlBefore), ValLossAfter: num(vlAfter)}
	if scored {
		sum.Eval.ExactMatchBefore, sum.Eval.ExactMatchAfter = num(scBefore.ExactMatch), num(scAfter.ExactMatch)
		sum.Eval.FormatAccuracyBefore, sum.Eval.FormatAccuracyAfter = num(scBefore.FormatAccuracy), num(scAfter.FormatAccuracy)
		sum.Eval.Examples = scAfter.N
	}
	sum.Seconds = time.Since(start).Seconds()
	if !lead {
		return sum, nil
	}
	if opts.Method == model.MethodLoRA {
		err = m.SaveAdapter(cfg.Out, src.Name)
		sum.Output = "adapter_model.safetensors"
	} else {
		err = m.SaveBase(cfg.Out)
		sum.Output = "model.safetensors"
	}
	if err != nil {
		return nil, fmt.Errorf("save to %s: %w", cfg.Out, err)
	}
	raw, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(cfg.Out, "summary.json"), append(raw, '\n'), 0o644); err != nil {
		return nil, err
	}
	printEvalTable(jio.Stdout, sum, scored)
	return sum, nil
}

// num turns NaN (no data) into null.
func num(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

func printEvalTable(w io.Writer, s *Summary, scored bool) {
	f := func(p *float64, pct bool) string {
		if p == nil {
			return "-"
		}
		if pct {
			return fmt.Sprintf("%.1f%%", 100**p)
		}
		return fmt.Sprintf("%.4f", *p)
	}
	fmt.Fprintf(w, "\n%-22s %10s %10s\n", "held-out", "before", "after")
	fmt.Fprintf(w, "%-22s %10s %10s\n", "validation loss", f(s.Eval.ValLossBefore, false), f(s.Eval.ValLossAfter, false))
	if scored {
		fmt.Fprintf(w, "%-22s %10s %10s\n", "exact match", f(s.Eval.ExactMatchBefore, true), f(s.Eval.ExactMatchAfter, true))
		fmt.Fprintf(w, "%-22s %10s %10s\n", "format accuracy", f(s.Eval.FormatAccuracyBefore, true), f(s.Eval.FormatAccuracyAfter, true))
		fmt.Fprintf(w, "(%d held-out test examples, greedy decoding)\n", s.Eval.Examples)
	}
	fmt.Fprintf(w, "%d steps in %.0fs, %.0f tokens/s; wrote %s\n", s.Steps, s.Seconds, s.TokensPerSec, s.Output)
}

// jsonlWriter appends one JSON object per line and flushes each line, so a
// crash loses at most the line being written.
type jsonlWriter struct{ f *os.File }

func newJSONLWriter(path string) (*jsonlWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &jsonlWriter{f: f}, nil
}

func (w *jsonlWriter) write(v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err == nil {
		w.f.Write(buf.Bytes())
	}
}

func (w *jsonlWriter) Close() error { return w.f.Close() }
