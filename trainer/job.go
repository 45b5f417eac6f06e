package trainer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/internal/atomicfile"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/checkpoint"
	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/memory"
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
	// Hash identifies the base weights (sha256 of the safetensors file, or
	// the preset and seed for random initialisation), so that nodes with
	// different copies of "the same" model never train together.
	Hash string
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
		sum := sha256.Sum256(weights)
		src := ModelSource{Name: name, Config: cfg, Hash: hex.EncodeToString(sum[:])}
		if random {
			src.Hash = fmt.Sprintf("random:%s:%d", name, seed)
		}
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
		return ModelSource{Name: name, Config: cfg, Hash: fmt.Sprintf("random:%s:%d", name, seed),
			Load: func(m *model.Model) error { return m.InitBase(seed) }}, nil
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
	hash := fmt.Sprintf("random:%s:%d", dir, seed)
	if !random {
		if hash, err = fileSHA256(weights); err != nil {
			return ModelSource{}, fmt.Errorf("--model %s: %w", name, err)
		}
	}
	return ModelSource{Name: name, Config: cfg, Hash: hash, Load: func(m *model.Model) error {
		if random {
			return m.InitBase(seed)
		}
		return m.LoadBase(weights)
	}}, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
// Stdout (nil: nowhere); step progress to OnStep (a progress bar or log lines).
type JobIO struct {
	Stdout io.Writer
	OnStep func(StepStats)
	// MemBudget, when positive, is this node's memory budget in bytes
	// (resolved by the caller from --mem-budget against NVML or the host).
	// Before training the largest micro-batch that fits is planned (and
	// activation recompute only if needed); while training, MemoryUsed is
	// sampled after every step and a step over budget halves the next
	// micro-batch.
	MemBudget  int64
	MemoryUsed func() (uint64, error)
	// Threads is the backend's thread count, for the planner's estimate of
	// per-thread buffers (0: GOMAXPROCS). CUDA says the budget is a GPU's.
	Threads int
	CUDA    bool
	// CUDABF16: the GPU has bf16 tensor cores (decides --precision auto).
	CUDABF16 bool
}

// Session is one rank's whole job: the model and data it loaded once, and the
// trainer whose state outlives any one world. A data-parallel job that loses
// or gains nodes keeps its Session and gives it the communicator of each new
// world (SetComm, SyncState); a single process uses RunJob.
type Session struct {
	Cfg     Config
	Src     ModelSource
	Model   *model.Model
	Data    *Dataset
	Trainer *Trainer

	log     *zap.Logger
	tok     data.Tokenizer
	be      kernels.Backend
	comm    collective.Communicator
	io      JobIO
	start   time.Time
	metrics *jsonlWriter
	res     Result
	worlds  []checkpoint.WorldRecord
	// lastSaved is the step of the last checkpoint this process wrote.
	lastSaved int
	resumed   bool
}

// NewSession validates the job, loads the model (and initialises the
// adapters) and the data. Nothing is trained or written yet.
func NewSession(cfg Config, be kernels.Backend, log *zap.Logger, jio JobIO) (*Session, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Before anything slow: a precision the device cannot run is a flag error.
	precision, err := cfg.ResolvePrecision(Device{CUDA: jio.CUDA, BF16: jio.CUDABF16})
	if err != nil {
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
	opts.Precision = precision
	log.Info("precision", zap.Stringer("compute", opts.Precision), zap.String("flag", cfg.Precision),
		zap.String("master_weights", "f32"), zap.String("optimizer_state", "f32"))
	if jio.MemBudget > 0 {
		if err := planMemory(&cfg, &opts, src.Config, jio, log); err != nil {
			return nil, err
		}
	}
	m, err := model.New(be, src.Config, opts)
	if err != nil {
		return nil, err
	}
	if err := src.Load(m); err != nil {
		m.Free()
		return nil, fmt.Errorf("load model %s: %w", src.Name, err)
	}
	if opts.Method == model.MethodLoRA {
		if err := m.InitLoRA(cfg.Seed); err != nil {
			m.Free()
			return nil, err
		}
	}
	single := &collective.Single{}
	tr, err := New(cfg, m, single, tok, ds, log)
	if err != nil {
		m.Free()
		return nil, err
	}
	if jio.MemBudget > 0 && jio.MemoryUsed != nil {
		tr.guard = memory.NewGuard(jio.MemBudget, cfg.MicroBatch)
		tr.memUsed = jio.MemoryUsed
	}
	// Loading left per-tensor host copies as garbage; give it back before training.
	runtime.GC()
	debug.FreeOSMemory()
	if jio.Stdout == nil {
		jio.Stdout = io.Discard
	}
	return &Session{Cfg: cfg, Src: src, Model: m, Data: ds, Trainer: tr, log: log, tok: tok, be: be, comm: single, io: jio, start: start}, nil
}

// planMemory picks the micro-batch (and recompute) that fits the budget:
// the largest up to --micro-batch. Gradient accumulation keeps the global
// batch, so the result does not depend on what each node picked.
func planMemory(cfg *Config, opts *model.Options, mc model.Config, jio JobIO, log *zap.Logger) error {
	mo := memory.FromModel(*opts)
	mo.SeqLen, mo.Device, mo.Threads = cfg.SeqLen, memory.CPU, jio.Threads
	if jio.CUDA {
		mo.Device, mo.ActDType, mo.BaseDType = memory.CUDA, memory.F32, memory.F32
		if opts.Precision == kernels.BF16 {
			mo.ActDType = memory.BF16
			if opts.Method == model.MethodLoRA {
				mo.BaseDType = memory.BF16
			}
		}
	}
	ch, err := memory.Plan(mc, mo, jio.MemBudget, min(cfg.MicroBatch, cfg.Batch))
	if err != nil {
		return fmt.Errorf("--mem-budget %s: %w", memory.FormatBytes(jio.MemBudget), err)
	}
	if ch.MicroBatch != cfg.MicroBatch || ch.Recompute != opts.Recompute {
		log.Info("memory plan: adjusted to fit the budget", zap.Int("micro_batch", ch.MicroBatch), zap.Int("asked", cfg.MicroBatch),
			zap.Bool("recompute", ch.Recompute), zap.String("estimate", memory.FormatBytes(ch.Estimate.Total)),
			zap.String("budget", memory.FormatBytes(jio.MemBudget)))
	} else {
		log.Info("memory plan", zap.Int("micro_batch", ch.MicroBatch), zap.Bool("recompute", ch.Recompute),
			zap.String("estimate", memory.FormatBytes(ch.Estimate.Total)), zap.String("budget", memory.FormatBytes(jio.MemBudget)))
	}
	cfg.MicroBatch, opts.Recompute, cfg.Recompute = ch.MicroBatch, ch.Recompute, ch.Recompute
	return nil
}

// Close frees the model and closes the metrics file.
func (s *Session) Close() {
	if s.metrics != nil {
		s.metrics.Close()
	}
	s.Model.Free()
}

// SetComm gives the session the communicator of a (new) world.
func (s *Session) SetComm(c collective.Communicator) {
	s.comm = c
	s.Trainer.SetComm(c)
}

// SetStdout redirects the PEFT line and the final table (nil: nowhere).
func (s *Session) SetStdout(w io.Writer) {
	if w == nil {
		w = io.Discard
	}
	s.io.Stdout = w
}

// Lead reports whether this rank writes the outputs: rank 0 of the current world.
func (s *Session) Lead() bool { return s.comm.Rank() == 0 }

// PrintParams prints PEFT's trainable-parameters line.
func (s *Session) PrintParams() {
	fmt.Fprintln(s.io.Stdout, ParamLine(s.Model.TrainableParams(), s.Model.AllParams()))
}

// scored reports whether held-out examples are scored by generation.
func (s *Session) scored() bool {
	return s.Data.Scored && s.Cfg.EvalExamples > 0 && len(s.Data.Test) > 0
}

// evalAll computes the validation loss (all ranks) and the held-out scores.
func (s *Session) evalAll(ctx context.Context, when string) (vl float64, sc TaskScore, err error) {
	t0 := time.Now()
	if vl, err = s.Trainer.ValLoss(ctx); err != nil {
		return 0, sc, err
	}
	if s.scored() {
		test := s.Data.Test[:min(len(s.Data.Test), s.Cfg.EvalExamples)]
		if sc, err = ScoreExamples(ctx, s.Model, s.tok, test, s.Cfg.SeqLen); err != nil {
			return 0, sc, err
		}
	}
	s.log.Info("evaluation "+when, zap.Float64("val_loss", vl), zap.Float64("exact_match", sc.ExactMatch),
		zap.Float64("format_accuracy", sc.FormatAccuracy), zap.Int("scored", sc.N), zap.Duration("took", time.Since(t0)))
	return vl, sc, nil
}

// Baseline evaluates the model before training, once per job (a joining
// node receives the figures with the state instead).
func (s *Session) Baseline(ctx context.Context) error {
	st := s.Trainer.State()
	if st.Baseline.Done || st.Step > 0 {
		return nil
	}
	vl, sc, err := s.evalAll(ctx, "before training")
	if err != nil {
		return err
	}
	st.Baseline = Baseline{Done: true, ValLoss: vl, ExactMatch: sc.ExactMatch, FormatAcc: sc.FormatAccuracy, Scored: sc.N}
	s.Trainer.SetState(st, s.Trainer.Best())
	return nil
}

// metricsFile opens metrics.jsonl when this rank leads: truncated at the
// start of a fresh job, appended to when a new world continues one.
func (s *Session) metricsFile() *jsonlWriter {
	if !s.Lead() {
		return nil
	}
	if s.metrics == nil {
		if err := os.MkdirAll(s.Cfg.Out, 0o755); err != nil {
			s.log.Warn("cannot write metrics", zap.Error(err))
			return nil
		}
		step := s.Trainer.State().Step
		fresh := step == 0 && !s.resumed
		path := filepath.Join(s.Cfg.Out, "metrics.jsonl")
		if !fresh {
			// Continuing (a resume, or a new lead after a failure): drop the
			// records of steps beyond the state we continue from, which
			// will be done again, so the curve has each step once.
			if err := truncateMetrics(path, step); err != nil {
				s.log.Warn("could not trim metrics.jsonl", zap.Error(err))
			}
		}
		w, err := openJSONL(path, fresh)
		if err != nil {
			s.log.Warn("cannot write metrics", zap.Error(err))
			return nil
		}
		s.metrics = w
	}
	return s.metrics
}

// Metric appends one object to metrics.jsonl when this rank leads.
func (s *Session) Metric(v map[string]any) {
	if w := s.metricsFile(); w != nil {
		w.write(v)
	}
}

// Train runs (or continues) training in the current world. Errors from the
// communicator leave the state at the last completed step, ready for
// SyncState in a new world.
func (s *Session) Train(ctx context.Context, h Hooks) error {
	if s.Lead() {
		if err := os.MkdirAll(s.Cfg.Out, 0o755); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	onStep, onEval := h.OnStep, h.OnEval
	h.OnStep = func(st StepStats) {
		s.Metric(map[string]any{"kind": "train", "step": st.Step, "epoch": st.Epoch, "loss": st.Loss, "lr": st.LR,
			"grad_norm": st.GradNorm, "tokens": st.Tokens, "tokens_per_s": st.TokensPerSec, "step_seconds": st.Elapsed.Seconds(),
			"allreduce_seconds": st.AllReduce.Seconds(), "world_size": s.comm.Size(), "micro_batch": st.MicroBatch})
		if onStep != nil {
			onStep(st)
		}
		if s.io.OnStep != nil {
			s.io.OnStep(st)
		}
	}
	h.OnEval = func(er EvalResult) {
		s.Metric(map[string]any{"kind": "eval", "step": er.Step, "val_loss": er.ValLoss, "best": er.Best})
		s.log.Info("validation", zap.Int("step", er.Step), zap.Float64("val_loss", er.ValLoss), zap.Bool("best", er.Best))
		if onEval != nil {
			onEval(er)
		}
	}
	afterStep := h.AfterStep
	h.AfterStep = func(step int) error {
		if s.Cfg.CheckpointEvery > 0 && step%s.Cfg.CheckpointEvery == 0 && s.Lead() {
			if _, err := s.SaveCheckpoint(); err != nil {
				return err
			}
			s.lastSaved = step
		}
		if afterStep != nil {
			return afterStep(step)
		}
		return nil
	}
	res, err := s.Trainer.Run(ctx, h)
	if res.TokensPerSec > 0 {
		s.res.TokensPerSec = res.TokensPerSec
	}
	s.res.Steps, s.res.FinalLoss, s.res.BestStep, s.res.BestVal, s.res.StoppedEarly = res.Steps, res.FinalLoss, res.BestStep, res.BestVal, res.StoppedEarly
	return err
}

// OutputError is Finish's error when the evaluation went through but the
// leading rank could not write the outputs (a full disk, an unwritable
// --out): every rank holds the trained state, but another world would only
// fail the same way on a shared --out, so the ranks stop instead.
type OutputError struct{ Err error }

func (e *OutputError) Error() string { return e.Err.Error() }
func (e *OutputError) Unwrap() error { return e.Err }

// Finish evaluates the trained model and, on the leading rank, writes the
// adapter (or full weights), summary.json and the before/after table. A
// failure to write is an *OutputError.
func (s *Session) Finish(ctx context.Context) (*Summary, error) {
	sum, err := s.finish(ctx)
	if err != nil && sum != nil {
		return nil, &OutputError{err}
	}
	return sum, err
}

// finish is Finish; an error with a summary is one of writing the outputs.
func (s *Session) finish(ctx context.Context) (*Summary, error) {
	vl, sc, err := s.evalAll(ctx, "after training")
	if err != nil {
		return nil, err
	}
	st := s.Trainer.State()
	cfg := s.Cfg
	sum := &Summary{Model: s.Src.Name, Method: cfg.Method, PlannedSteps: s.Trainer.TotalSteps(), TrainableParams: s.Model.TrainableParams(),
		AllParams: s.Model.AllParams(), WorldSize: s.comm.Size(), Backend: s.be.Name(), Examples: s.Data.Examples,
		SkippedLines: s.Data.Read.Skipped, Truncated: s.Data.Encoded.Truncated,
		Steps: st.Step, StoppedEarly: st.Stopped, FinalLoss: st.FinalLoss, TokensPerSec: s.res.TokensPerSec}
	if st.BestStep > 0 {
		sum.BestStep = st.BestStep
	}
	sum.Eval = SummaryEval{ValLossBefore: num(st.Baseline.ValLoss), ValLossAfter: num(vl)}
	scored := s.scored()
	if scored {
		sum.Eval.ExactMatchBefore, sum.Eval.ExactMatchAfter = num(st.Baseline.ExactMatch), num(sc.ExactMatch)
		sum.Eval.FormatAccuracyBefore, sum.Eval.FormatAccuracyAfter = num(st.Baseline.FormatAcc), num(sc.FormatAccuracy)
		sum.Eval.Examples = sc.N
	}
	sum.Seconds = time.Since(s.start).Seconds()
	if !s.Lead() {
		return sum, nil
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return sum, fmt.Errorf("--out: %w", err)
	}
	if s.Model.Opts.Method == model.MethodLoRA {
		err = s.Model.SaveAdapter(cfg.Out, s.Src.Name)
		sum.Output = "adapter_model.safetensors"
	} else {
		err = s.Model.SaveBase(cfg.Out)
		sum.Output = "model.safetensors"
	}
	if err != nil {
		return sum, fmt.Errorf("save to %s: %w", cfg.Out, err)
	}
	raw, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return sum, err
	}
	if err := atomicfile.WriteFile(filepath.Join(cfg.Out, "summary.json"), append(raw, '\n'), 0o644); err != nil {
		return sum, err
	}
	printEvalTable(s.io.Stdout, sum, scored)
	return sum, nil
}

// RunJob runs a whole job on one rank that stays in one world: load model and
// data, evaluate, train, evaluate again, and (on rank 0) write the outputs to
// cfg.Out.
func RunJob(ctx context.Context, cfg Config, be kernels.Backend, comm collective.Communicator, log *zap.Logger, jio JobIO) (*Summary, error) {
	s, err := NewSession(cfg, be, log, jio)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.SetComm(comm)
	if !s.Lead() {
		s.io.Stdout = io.Discard
	}
	if err := s.StartOrResume(); err != nil {
		return nil, err
	}
	s.PrintParams()
	if err := s.Baseline(ctx); err != nil {
		return nil, err
	}
	if err := s.Train(ctx, Hooks{}); err != nil {
		return nil, s.Stopped(ctx, err)
	}
	return s.Finish(ctx)
}

// StartOrResume resumes from the newest checkpoint with --resume (starting
// fresh, with a note, when there is none yet: a restart policy may pass
// --resume every time).
func (s *Session) StartOrResume() error {
	if !s.Cfg.Resume {
		return nil
	}
	err := s.Resume()
	if errors.Is(err, checkpoint.ErrNoCheckpoint) && !errors.Is(err, checkpoint.ErrAllInvalid) {
		s.log.Info("--resume: no checkpoint yet; starting from the beginning", zap.String("dir", s.CheckpointDir()))
		return nil
	}
	return err
}

// Stopped handles a training error: when the context was cancelled (SIGTERM,
// Ctrl-C) the leading rank checkpoints the last completed step, so that
// --resume continues exactly; the error says so.
func (s *Session) Stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil || !s.Lead() {
		return err
	}
	step := s.Trainer.State().Step
	if step == 0 {
		return err
	}
	path := filepath.Join(s.CheckpointDir(), checkpoint.DirName(step))
	if s.lastSaved != step {
		p, serr := s.SaveCheckpoint()
		if serr != nil {
			return fmt.Errorf("%w (and the checkpoint failed: %v)", err, serr)
		}
		path = p
	}
	return fmt.Errorf("stopped after step %d; checkpoint %s; rerun with --resume to continue: %w", step, path, err)
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

func openJSONL(path string, truncate bool) (*jsonlWriter, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if truncate {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
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
