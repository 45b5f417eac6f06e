package trainer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/memory"
	"github.com/peertune/peertune/trainer/model"
)

// AdamW's moment coefficients and epsilon: the usual values for fine-tuning.
const (
	adamBeta1 = 0.9
	adamBeta2 = 0.999
	adamEps   = 1e-8
)

// Trainer runs one job on one rank. Every rank of a world runs the same loop
// over the same global sample order (DESIGN invariant 2) and all-reduces the
// one flat gradient buffer per optimizer step (invariant 1).
type Trainer struct {
	cfg   Config
	log   *zap.Logger
	m     *model.Model
	comm  collective.Communicator
	tok   data.Tokenizer
	ds    *Dataset
	order *data.Order
	sched Schedule
	// stats is a small buffer [loss sum, target count, rebuild votes]
	// all-reduced after the gradients of every step.
	stats kernels.Buffer
	// check carries rank 0's checksum of the trainable state to every rank.
	check kernels.Buffer

	// state is the progress beyond the model's buffers; best is the host
	// copy of the trainable parameters at the best validation loss.
	state RunState
	best  []float32

	// guard backs off the micro-batch after a step over the memory budget;
	// memUsed samples the memory in use (nil: no guard).
	guard       *memory.Guard
	memUsed     func() (uint64, error)
	guardWarned bool
}

// RunState is the trainer's progress beyond the model buffers: everything a
// new world, a joining node or a checkpoint needs to continue exactly. The
// data position needs nothing more than Step: the global sample order is a
// pure function of (seed, step) (DESIGN invariant 2), and so are the
// dropout masks.
type RunState struct {
	Step      int     // last completed optimizer step
	FinalLoss float64 // loss of that step
	BestVal   float64 // +Inf before the first evaluation
	BestStep  int
	SinceBest int  // evaluations since the best one
	Stopped   bool // early stopping fired
	// Baseline is the evaluation before training, kept so that whichever
	// rank ends up writing summary.json can report "before" figures.
	Baseline Baseline
}

// Baseline holds the held-out figures of the model before training.
type Baseline struct {
	Done                  bool
	ValLoss               float64
	ExactMatch, FormatAcc float64
	Scored                int
}

// Hooks let the caller watch and steer Run. Every field may be nil.
type Hooks struct {
	OnStep func(StepStats)
	OnEval func(EvalResult)
	// OnContribute is called before each gradient all-reduce with the IDs
	// of the samples this rank computed for the step (an attempt: if the
	// all-reduce fails, the same step is attempted again in a new world).
	OnContribute func(step int, ids []string)
	// AfterStep runs at the end of every completed step, after any
	// evaluation (where periodic checkpoints are written).
	AfterStep func(step int) error
	// WantRebuild is asked once per step. When it is true on any rank, all
	// ranks finish that step together and Run returns ErrRebuild, so that a
	// joining node is admitted at a step boundary.
	WantRebuild func() bool
}

// ErrRebuild reports that the ranks agreed to form a new world after the
// step they just completed (a node wants to join).
var ErrRebuild = errors.New("membership changed: forming a new world")

// StepStats describe one completed optimizer step.
type StepStats struct {
	Step, Total  int
	Epoch        float64
	Loss         float64 // mean over the step's global target tokens
	LR           float64
	GradNorm     float64 // before clipping
	Tokens       int     // global tokens processed (padding excluded)
	TokensPerSec float64
	Elapsed      time.Duration
	// AllReduce is the part of Elapsed spent in the gradient all-reduce.
	AllReduce time.Duration
	// MicroBatch is the micro-batch size this rank used.
	MicroBatch int
	ETA        time.Duration
}

// New prepares a trainer: the model must be loaded and its adapters
// initialised; the dataset tokenised with tok.
func New(cfg Config, m *model.Model, comm collective.Communicator, tok data.Tokenizer, ds *Dataset, log *zap.Logger) (*Trainer, error) {
	steps := cfg.Steps
	if steps == 0 {
		steps = int(math.Ceil(cfg.Epochs * float64(len(ds.Train)) / float64(cfg.Batch)))
		steps = max(steps, 1)
	}
	sched := Schedule{Peak: cfg.LR, Warmup: min(cfg.Warmup, steps-1), Total: steps}
	if err := sched.Validate(); err != nil {
		return nil, err
	}
	order, err := data.NewOrder(cfg.Seed, len(ds.Train), cfg.Batch)
	if err != nil {
		return nil, err
	}
	stats, err := m.Backend().Alloc(3, kernels.F32)
	if err != nil {
		return nil, err
	}
	check, err := m.Backend().Alloc(checksumWords, kernels.F32)
	if err != nil {
		return nil, err
	}
	if n := m.Grads.Len(); n != m.TrainableParams() {
		// Invariant 1: the one buffer that crosses the wire is exactly the
		// trainable parameters' gradient.
		return nil, fmt.Errorf("gradient buffer has %d elements, trainable parameters %d", n, m.TrainableParams())
	}
	return &Trainer{cfg: cfg, log: log, m: m, comm: comm, tok: tok, ds: ds, order: order, sched: sched, stats: stats, check: check,
		state: RunState{BestVal: math.Inf(1)}}, nil
}

// SetComm switches to the communicator of a new world.
func (t *Trainer) SetComm(c collective.Communicator) { t.comm = c }

// State is the trainer's progress.
func (t *Trainer) State() RunState { return t.state }

// SetState replaces the trainer's progress (resuming from a checkpoint).
func (t *Trainer) SetState(st RunState, best []float32) { t.state, t.best = st, best }

// Best is the host copy of the best parameters (nil before the first evaluation).
func (t *Trainer) Best() []float32 { return t.best }

// TotalSteps is the number of optimizer steps the job runs (unless it stops early).
func (t *Trainer) TotalSteps() int { return t.sched.Total }

// Step runs optimizer step `step` (counted from 1): this rank's micro-batches
// of the step's global slice, one all-reduce of the gradients, clipping and
// AdamW. The loss of every micro-batch is scaled by 1/(the step's global
// target count), so the summed gradient is the mean over the whole step,
// whatever the world size and micro-batch size.
func (t *Trainer) Step(ctx context.Context, step int) (StepStats, error) {
	st, _, err := t.step(ctx, step, Hooks{})
	return st, err
}

// step is Step with hooks; rebuild reports that some rank asked for a new world.
func (t *Trainer) step(ctx context.Context, step int, h Hooks) (_ StepStats, rebuild bool, _ error) {
	start := time.Now()
	samples := t.order.Step(step - 1)
	seqs := make([]data.Sequence, len(samples))
	globalTargets, globalTokens := 0, 0
	for i, s := range samples {
		seqs[i] = t.ds.Train[s.Index]
		globalTargets += seqs[i].Targets()
		globalTokens += len(seqs[i].Tokens)
	}
	if globalTargets == 0 {
		return StepStats{}, false, fmt.Errorf("step %d: the global batch has no target tokens", step)
	}
	lo, hi := data.RankRange(len(seqs), t.comm.Rank(), t.comm.Size())
	if err := t.m.ZeroGrads(); err != nil {
		return StepStats{}, false, err
	}
	var lossSum float64
	var targets int
	for mb := lo; mb < hi; mb += t.cfg.MicroBatch {
		if err := ctx.Err(); err != nil {
			return StepStats{}, false, err
		}
		end := min(mb+t.cfg.MicroBatch, hi)
		b := makeBatch(seqs[mb:end], t.tok.PAD())
		// The dropout seed depends on the step and the global position of the
		// micro-batch, not on the rank, so masks follow the data.
		seed := t.cfg.Seed*0x9e3779b97f4a7c15 ^ uint64(step)<<20 ^ uint64(mb)
		s, n, err := t.m.ForwardBackward(b, 1/float32(globalTargets), seed)
		if err != nil {
			return StepStats{}, false, fmt.Errorf("step %d: %w", step, err)
		}
		lossSum += s
		targets += n
	}
	if h.OnContribute != nil {
		ids := make([]string, 0, hi-lo)
		for _, s := range seqs[lo:hi] {
			ids = append(ids, s.ID)
		}
		h.OnContribute(step, ids)
	}
	vote := float32(0)
	if h.WantRebuild != nil && h.WantRebuild() {
		vote = 1
	}
	be := t.m.Backend()
	if err := be.Sync(); err != nil {
		return StepStats{}, false, err
	}
	arStart := time.Now()
	if err := t.comm.AllReduce(ctx, t.m.Grads, collective.Sum); err != nil {
		return StepStats{}, false, fmt.Errorf("step %d: all-reduce gradients: %w", step, err)
	}
	arTime := time.Since(arStart)
	if err := be.CopyIn(t.stats, []float32{float32(lossSum), float32(targets), vote}); err != nil {
		return StepStats{}, false, err
	}
	if err := t.comm.AllReduce(ctx, t.stats, collective.Sum); err != nil {
		return StepStats{}, false, fmt.Errorf("step %d: all-reduce loss: %w", step, err)
	}
	// Only once the stats are reduced is the update applied: every rank
	// has then sent its whole gradient, so a rank that fails here keeps the
	// previous state and the new world adopts the most advanced one.
	reduced := make([]float32, 3)
	if err := be.CopyOut(reduced, t.stats); err != nil {
		return StepStats{}, false, err
	}
	ss, err := t.m.GradSumSquares()
	if err != nil {
		return StepStats{}, false, err
	}
	norm := math.Sqrt(ss)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return StepStats{}, false, fmt.Errorf("step %d: gradient norm is %v (loss %g): training diverged; lower --lr", step, norm, reduced[0]/reduced[1])
	}
	clip := 1.0
	if t.cfg.GradClip > 0 && norm > t.cfg.GradClip {
		clip = t.cfg.GradClip / norm
	}
	lr := t.sched.LR(step)
	err = t.m.Update(kernels.AdamWParams{LR: float32(lr), Beta1: adamBeta1, Beta2: adamBeta2, Eps: adamEps,
		WeightDecay: float32(t.cfg.WeightDecay), Step: step, GradScale: float32(clip)})
	if err != nil {
		return StepStats{}, false, err
	}
	if err := be.Sync(); err != nil {
		return StepStats{}, false, err
	}
	el := time.Since(start)
	return StepStats{
		Step: step, Total: t.sched.Total, Epoch: t.order.StepEpoch(step),
		Loss: float64(reduced[0]) / float64(reduced[1]), LR: lr, GradNorm: norm,
		Tokens: globalTokens, TokensPerSec: float64(globalTokens) / el.Seconds(), Elapsed: el, AllReduce: arTime,
		MicroBatch: t.cfg.MicroBatch,
	}, reduced[2] > 0, nil
}

// makeBatch pads a micro-batch to its longest sequence (not to --seq-len:
// short examples should not pay for padding). Padding positions carry no
// target; attention is causal, so they never influence real positions.
func makeBatch(seqs []data.Sequence, pad int32) *model.Batch {
	seq := 0
	for _, s := range seqs {
		seq = max(seq, len(s.Tokens))
	}
	b := &model.Batch{Rows: len(seqs), Seq: seq}
	n := len(seqs) * seq
	b.Tokens, b.Targets, b.Positions = make([]int32, n), make([]int32, n), make([]int32, n)
	for r, s := range seqs {
		for i := 0; i < seq; i++ {
			j := r*seq + i
			b.Positions[j] = int32(i)
			if i < len(s.Tokens) {
				b.Tokens[j], b.Targets[j] = s.Tokens[i], s.Labels[i]
			} else {
				b.Tokens[j], b.Targets[j] = pad, kernels.IgnoreIndex
			}
		}
	}
	return b
}

// ValLoss is the mean loss over the validation split, each rank taking its
// share and the sums all-reduced.
func (t *Trainer) ValLoss(ctx context.Context) (float64, error) {
	if len(t.ds.Val) == 0 {
		return math.NaN(), nil
	}
	lo, hi := data.RankRange(len(t.ds.Val), t.comm.Rank(), t.comm.Size())
	var sum float64
	var n int
	for i := lo; i < hi; i += t.cfg.MicroBatch {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		s, c, err := t.m.Loss(makeBatch(t.ds.Val[i:min(i+t.cfg.MicroBatch, hi)], t.tok.PAD()))
		if err != nil {
			return 0, fmt.Errorf("validation loss: %w", err)
		}
		sum += s
		n += c
	}
	be := t.m.Backend()
	if err := be.CopyIn(t.stats, []float32{float32(sum), float32(n), 0}); err != nil {
		return 0, err
	}
	if err := t.comm.AllReduce(ctx, t.stats, collective.Sum); err != nil {
		return 0, fmt.Errorf("all-reduce validation loss: %w", err)
	}
	r := make([]float32, 3)
	if err := be.CopyOut(r, t.stats); err != nil {
		return 0, err
	}
	if r[1] == 0 {
		return math.NaN(), nil
	}
	return float64(r[0]) / float64(r[1]), nil
}

// EvalResult is one evaluation point.
type EvalResult struct {
	Step    int
	ValLoss float64
	Best    bool
}

// Result is the outcome of Run.
type Result struct {
	Steps        int // optimizer steps completed
	FinalLoss    float64
	BestStep     int
	BestVal      float64
	StoppedEarly bool
	TokensPerSec float64 // this process's steps, evaluations excluded
}

// ErrStopped reports that the context was cancelled; the trainer state is
// that of the last completed step.
var ErrStopped = errors.New("training stopped")

// Run trains from the step after the last completed one to the last step,
// evaluating every EvalEvery steps. It keeps a host copy of the trainable
// parameters with the best validation loss and restores it when training
// ends, so what is saved is the best adapter, not the last (the seed's
// "overfitting small datasets" mistake). On a communication error it returns
// with the state of the last completed step, ready to go on in a new world.
func (t *Trainer) Run(ctx context.Context, h Hooks) (Result, error) {
	var trainTime time.Duration
	var trainTokens, stepsHere int
	result := func() Result {
		r := Result{Steps: t.state.Step, FinalLoss: t.state.FinalLoss, BestStep: t.state.BestStep, BestVal: t.state.BestVal, StoppedEarly: t.state.Stopped}
		if trainTime > 0 {
			r.TokensPerSec = float64(trainTokens) / trainTime.Seconds()
		}
		return r
	}
	for !t.state.Stopped && t.state.Step < t.sched.Total {
		if ctx.Err() != nil {
			return result(), fmt.Errorf("%w after step %d: %v", ErrStopped, t.state.Step, ctx.Err())
		}
		step := t.state.Step + 1
		st, rebuild, err := t.step(ctx, step, h)
		if err != nil {
			return result(), err
		}
		t.state.Step, t.state.FinalLoss = step, st.Loss
		trainTime += st.Elapsed
		trainTokens += st.Tokens
		stepsHere++
		st.ETA = trainTime / time.Duration(stepsHere) * time.Duration(t.sched.Total-step)
		if h.OnStep != nil {
			h.OnStep(st)
		}
		t.observeMemory(step)
		if t.comm.Size() > 1 && t.cfg.CheckEvery > 0 && step%t.cfg.CheckEvery == 0 {
			if err := t.checkReplicas(ctx, step); err != nil {
				return result(), err
			}
		}
		if t.cfg.EvalEvery > 0 && (step%t.cfg.EvalEvery == 0 || step == t.sched.Total) {
			if err := t.evaluate(ctx, step, h.OnEval); err != nil {
				return result(), err
			}
		}
		if h.AfterStep != nil {
			if err := h.AfterStep(step); err != nil {
				return result(), err
			}
		}
		if rebuild && !t.state.Stopped && t.state.Step < t.sched.Total {
			return result(), ErrRebuild
		}
	}
	if t.best != nil && t.state.BestStep != t.state.Step {
		t.log.Info("restoring the parameters with the best validation loss", zap.Int("best_step", t.state.BestStep), zap.Float64("val_loss", t.state.BestVal))
		if err := t.m.Backend().CopyIn(t.m.Params, t.best); err != nil {
			return result(), err
		}
	}
	return result(), nil
}

// observeMemory samples the memory in use after a step; above the budget,
// the next step runs half the micro-batch (gradient accumulation keeps the
// global batch, so only speed changes) and the activations are reallocated.
func (t *Trainer) observeMemory(step int) {
	if t.guard == nil {
		return
	}
	used, err := t.memUsed()
	if err != nil {
		t.log.Debug("memory sample", zap.Error(err))
		return
	}
	mb, changed, why := t.guard.Observe(int64(used))
	switch {
	case changed:
		t.log.Warn("memory guard: over budget, backing off the micro-batch", zap.Int("step", step), zap.Int("micro_batch", mb),
			zap.Int("was", t.cfg.MicroBatch), zap.String("reason", why))
		t.cfg.MicroBatch = mb
		t.m.ReleaseActivations()
		runtime.GC()
		debug.FreeOSMemory()
	case why != "" && !t.guardWarned:
		t.guardWarned = true
		t.log.Warn("memory guard", zap.Int("step", step), zap.String("reason", why))
	}
}

// evaluate computes the validation loss, keeps the best parameters and
// decides early stopping.
func (t *Trainer) evaluate(ctx context.Context, step int, onEval func(EvalResult)) error {
	vl, err := t.ValLoss(ctx)
	if err != nil {
		return err
	}
	er := EvalResult{Step: step, ValLoss: vl}
	if vl < t.state.BestVal {
		t.state.BestVal, t.state.BestStep, er.Best = vl, step, true
		t.state.SinceBest = 0
		if t.best == nil {
			t.best = make([]float32, t.m.Params.Len())
		}
		if err := t.m.Backend().CopyOut(t.best, t.m.Params); err != nil {
			return err
		}
	} else {
		t.state.SinceBest++
	}
	if onEval != nil {
		onEval(er)
	}
	if t.cfg.Patience > 0 && t.state.SinceBest >= t.cfg.Patience {
		t.state.Stopped = true
		t.log.Info("early stopping: validation loss has not improved",
			zap.Int("step", step), zap.Int("patience", t.cfg.Patience), zap.Int("best_step", t.state.BestStep), zap.Float64("best_val_loss", t.state.BestVal))
	}
	return nil
}

// checksumWords float32s carry a 64-bit checksum, 16 bits each: every value
// is an integer below 2^16, exact in float32, so a broadcast moves it intact.
const checksumWords = 4

// ErrDiverged reports that replicas no longer hold the same trainable state.
var ErrDiverged = errors.New("replicas diverged")

// checkReplicas compares a checksum of this rank's trainable parameters with
// rank 0's (DESIGN invariant 3). Every rank applies the same all-reduced
// gradient with the same optimizer, so the states must be bitwise equal; a
// difference means silent corruption or a bug, and training stops loudly.
func (t *Trainer) checkReplicas(ctx context.Context, step int) error {
	be := t.m.Backend()
	host := make([]float32, t.m.Params.Len())
	if err := be.CopyOut(host, t.m.Params); err != nil {
		return err
	}
	h := fnv.New64a()
	var b [4]byte
	for _, v := range host {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		h.Write(b[:])
	}
	sum := h.Sum64()
	mine := make([]float32, checksumWords)
	for i := range mine {
		mine[i] = float32((sum >> (16 * i)) & 0xffff)
	}
	if err := be.CopyIn(t.check, mine); err != nil {
		return err
	}
	if err := t.comm.Broadcast(ctx, t.check, 0); err != nil {
		return fmt.Errorf("step %d: broadcast checksum: %w", step, err)
	}
	theirs := make([]float32, checksumWords)
	if err := be.CopyOut(theirs, t.check); err != nil {
		return err
	}
	for i := range mine {
		if mine[i] != theirs[i] {
			return fmt.Errorf("%w at step %d: rank %d's trainable state differs from rank 0's (checksum %016x)", ErrDiverged, step, t.comm.Rank(), sum)
		}
	}
	return nil
}
