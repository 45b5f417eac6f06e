package memory

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/peertune/peertune/trainer/model"
)

// Method is what a run trains. QLoRA is LoRA over an NF4-quantised base.
type Method int

// The methods.
const (
	LoRA Method = iota
	QLoRA
	Full
)

func (m Method) String() string {
	switch m {
	case QLoRA:
		return "qlora"
	case Full:
		return "full"
	}
	return "lora"
}

// ParseMethod reads "lora", "qlora" or "full".
func ParseMethod(s string) (Method, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "lora":
		return LoRA, nil
	case "qlora":
		return QLoRA, nil
	case "full":
		return Full, nil
	}
	return 0, fmt.Errorf("unknown method %q: want lora, qlora or full", s)
}

// Device is where the buffers live.
type Device int

// The devices.
const (
	CPU Device = iota
	CUDA
)

func (d Device) String() string {
	if d == CUDA {
		return "cuda"
	}
	return "cpu"
}

// ParseDevice reads "cpu" or "cuda" ("gpu" is accepted too).
func ParseDevice(s string) (Device, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "cpu":
		return CPU, nil
	case "cuda", "gpu":
		return CUDA, nil
	}
	return 0, fmt.Errorf("unknown device %q: want cpu or cuda", s)
}

// DType is the storage type of the frozen base weights.
type DType int

// The base dtypes. Auto picks per method and device (see Options.BaseDType).
const (
	Auto DType = iota
	F32
	BF16
	NF4
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	case NF4:
		return "nf4"
	}
	return "auto"
}

// ParseDType reads "auto", "f32", "bf16" or "nf4".
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return Auto, nil
	case "f32", "fp32", "float32":
		return F32, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "nf4":
		return NF4, nil
	}
	return 0, fmt.Errorf("unknown dtype %q: want auto, f32, bf16 or nf4", s)
}

// Options are what the estimate depends on besides the architecture.
type Options struct {
	Method Method
	// LoRA: Rank, Targets and Dropout matter (dropout > 0 adds two
	// [tokens, max in-features] buffers). Unused for Full.
	LoRA       model.LoRAConfig
	MicroBatch int // sequences per forward/backward
	SeqLen     int // tokens per sequence (the padded length: an upper bound)
	Recompute  bool
	Device     Device
	// BaseDType is how the frozen base weights are stored. Auto: f32 on the
	// CPU (its backend is float32 only) and for full fine-tuning (the
	// weights are the trainable parameters, which AdamW updates in f32);
	// bf16 for LoRA on a GPU; nf4 for QLoRA.
	BaseDType DType
	// ActDType is the activations' storage type. Auto: bf16 on a GPU (what
	// the CUDA path is designed for; DESIGN: "BF16 for GPU activations"),
	// f32 on the CPU. Statistics (RMSNorm rstd, attention lse, losses) are
	// f32 either way, and so are logits and gradients. trainer/model
	// allocates this way with model.Options.Precision BF16 (the default on
	// a GPU); with Precision F32 a GPU plan passes F32 here.
	ActDType DType
	// Threads is the CPU backend's worker count, which sizes its
	// per-worker attention tiles and the OpenBLAS buffers; 0 means
	// runtime.GOMAXPROCS(0), what cpu.New uses by default.
	Threads int
}

// Fixed overheads. Each is a measured or documented figure, not a fit.
const (
	// CUDAContextBytes is the device memory a process holds before its first
	// allocation. A CUDA 12 context on an H100 is ≈ 0.5 GiB with lazy
	// module loading, 264 MiB of it the local-memory stack reserve (1 KiB ×
	// 2048 threads × 132 SMs); cuBLAS handles and their kernels plus NCCL's
	// ring buffers (NCCL_BUFFSIZE 4 MiB × 2 × channels) add up to ≈ 0.5
	// GiB more. 1 GiB covers both; a smaller GPU reserves less, so this
	// errs on the safe side.
	CUDAContextBytes = 1 << 30
	// CUBLASWorkspaceBytes is cuBLAS's per-handle workspace on Hopper (32 MiB,
	// the size NVIDIA documents for sm_90).
	CUBLASWorkspaceBytes = 32 << 20
	// CPURuntimeBytes and CPURuntimePerThread size a CPU process's memory
	// before the model exists: the Go runtime and binary (≈ 15 MiB
	// measured), the tokenised data set and gossip state of a job (a few
	// MiB for thousands of examples; 64 MiB in all leaves room), and
	// OpenBLAS's per-thread GEMM buffers: BUFFER_SIZE, 32 MiB on x86-64,
	// per OS thread that calls it, fully touched once a vocabulary-wide
	// GEMM packs its panels (measured: +31 MiB for one more thread).
	CPURuntimeBytes     = 64 << 20
	CPURuntimePerThread = 32 << 20
	// attnBlock mirrors kernels/cpu's attention tile height.
	attnBlock = 64
	// These mirror kernels/cuda's attention through GEMMs (attnGEMMMinSeq,
	// attnScoresBudget; a test there checks the estimate against its
	// allocations).
	cudaAttnGEMMMinSeq   = 256
	cudaAttnScoresBudget = 256 << 20
	// NF4 constants (bitsandbytes, QLoRA's defaults): 4-bit codes in blocks
	// of 64 weights, each block's absmax quantised to 8 bits ("double
	// quantisation") in groups of 256 blocks with one fp32 scale per group,
	// plus one fp32 offset and the two code books (16 + 256 fp32) per
	// tensor.
	nf4Block       = 64
	nf4DQBlock     = 256
	nf4PerTensor   = 4 + 4*(16+256)
	bytesF32       = 4
	bytesBF16      = 2
	maxWorkersSane = 1 << 12
)

// Term is one named contribution to peak memory.
type Term struct {
	Name  string
	Bytes int64
	Why   string
	// InStep: resident while a training step runs. InLoad: resident while
	// the base weights are being loaded (before any step). Total is the
	// larger of the two sums.
	InStep, InLoad bool
}

// Breakdown is an estimate: its terms and their peaks.
type Breakdown struct {
	Terms []Term
	Step  int64 // sum of the terms resident during a step
	Load  int64 // sum of the terms resident while loading the base weights
	Total int64 // max(Step, Load): the peak
	// Counts behind the terms.
	BaseParams, TrainableParams int64
	Tokens                      int64 // micro-batch × sequence length
}

// Term returns the term called name (zero Term when absent).
func (b Breakdown) Term(name string) Term {
	for _, t := range b.Terms {
		if t.Name == name {
			return t
		}
	}
	return Term{}
}

// Peak names the phase that sets Total: "step" or "load".
func (b Breakdown) Peak() string {
	if b.Load > b.Step {
		return "load"
	}
	return "step"
}

// Term names, stable for --json consumers.
const (
	TermBase            = "base_weights"
	TermBaseQuant       = "nf4_quant_constants"
	TermBaseUnquantized = "base_unquantized"
	TermTrainable       = "trainable_params"
	TermGrads           = "gradients"
	TermAdamW           = "adamw_states"
	TermLayerInputs     = "layer_inputs"
	TermLayerActs       = "layer_activations"
	TermFinalNorm       = "final_norm_and_loss"
	TermLogits          = "logits"
	TermBackward        = "backward_scratch"
	TermAttention       = "attention_workspace"
	TermRoPE            = "rope_tables"
	TermCUBLAS          = "cublas_workspace"
	TermDequant         = "dequant_workspace"
	TermLoadStaging     = "load_staging"
	TermWorkingCopy     = "bf16_working_copy"
	TermStaging         = "bf16_staging"
	TermRuntime         = "runtime"
	TermCUDAContext     = "cuda_context"
)

// Counts are the parameter counts of an architecture and adapter set.
type Counts struct {
	Embed, LMHead   int64 // LMHead is 0 when tied to the embeddings
	Projections     int64 // the seven linear layers of every decoder layer
	Norms, Biases   int64
	Base            int64 // all of the above
	LoRA            int64 // adapter parameters (0 without targets)
	LargestProj     int64 // elements of the biggest single projection weight
	LargestTensor   int64 // elements of the biggest base tensor
	ProjectionCount int64 // number of projection weight tensors (L × 7)
}

// projDims mirrors model.Proj's (in, out) features.
func projDims(c model.Config, p model.Proj) (in, out int64) {
	C, I, Q, KV := int64(c.Hidden), int64(c.Intermediate), int64(c.QDim()), int64(c.KVDim())
	switch p {
	case model.ProjQ:
		return C, Q
	case model.ProjK, model.ProjV:
		return C, KV
	case model.ProjO:
		return Q, C
	case model.ProjGate, model.ProjUp:
		return C, I
	}
	return I, C // down
}

// Count returns the parameter counts of cfg with adapters lc (lc.Rank 0 or
// no targets: none). They equal model.New's layouts (tested).
func Count(cfg model.Config, lc model.LoRAConfig) Counts {
	L, C, V := int64(cfg.Layers), int64(cfg.Hidden), int64(cfg.Vocab)
	var k Counts
	k.Embed = V * C
	if !cfg.TiedEmbed {
		k.LMHead = V * C
	}
	k.Norms = (2*L + 1) * C
	if cfg.QKVBias {
		k.Biases = L * (int64(cfg.QDim()) + 2*int64(cfg.KVDim()))
	}
	for _, p := range model.DefaultLoRATargets() {
		in, out := projDims(cfg, p)
		k.Projections += L * in * out
		k.LargestProj = max(k.LargestProj, in*out)
		k.ProjectionCount += L
	}
	k.LargestTensor = max(k.Embed, k.LargestProj)
	k.Base = k.Embed + k.LMHead + k.Norms + k.Biases + k.Projections
	if lc.Rank > 0 {
		for _, p := range uniqueTargets(lc.Targets) {
			in, out := projDims(cfg, p)
			k.LoRA += L * int64(lc.Rank) * (in + out)
		}
	}
	return k
}

// NF4Bytes is the storage of one tensor of n weights in NF4 with double
// quantisation: the packed 4-bit codes and, separately, the quantisation
// constants.
func NF4Bytes(n int64) (codes, constants int64) {
	blocks := ceilDiv(n, nf4Block)
	return ceilDiv(n, 2), blocks + 4*ceilDiv(blocks, nf4DQBlock) + nf4PerTensor
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// Validate checks the options.
func (o Options) Validate() error {
	if o.MicroBatch < 1 {
		return fmt.Errorf("micro-batch %d: must be at least 1", o.MicroBatch)
	}
	if o.SeqLen < 1 {
		return fmt.Errorf("sequence length %d: must be at least 1", o.SeqLen)
	}
	if o.Threads < 0 {
		return fmt.Errorf("threads %d: must not be negative", o.Threads)
	}
	if o.Method != Full {
		if o.LoRA.Rank < 1 {
			return fmt.Errorf("LoRA rank %d: must be at least 1", o.LoRA.Rank)
		}
		if len(o.LoRA.Targets) == 0 {
			return fmt.Errorf("LoRA: no target modules")
		}
		if o.LoRA.Dropout < 0 || o.LoRA.Dropout >= 1 {
			return fmt.Errorf("LoRA dropout %g: must be in [0, 1)", o.LoRA.Dropout)
		}
	}
	bd := o.baseDType()
	switch {
	case o.Method == Full && bd != F32:
		return fmt.Errorf("full fine-tuning keeps its weights in f32 (they are the trainable parameters); base dtype %s is not possible", bd)
	case o.Method == QLoRA && bd != NF4:
		return fmt.Errorf("qlora means an nf4 base; use --method lora for a %s base", bd)
	case o.Method == LoRA && bd == NF4:
		return fmt.Errorf("an nf4 base is --method qlora")
	case o.Device == CPU && bd == BF16:
		return fmt.Errorf("the CPU backend stores everything in f32; bf16 base weights need a GPU")
	}
	switch ad := o.actDType(); {
	case ad != F32 && ad != BF16:
		return fmt.Errorf("activations are f32 or bf16, not %s", ad)
	case o.Device == CPU && ad == BF16:
		return fmt.Errorf("the CPU backend stores everything in f32; bf16 activations need a GPU")
	}
	return nil
}

// BaseDTypeResolved is the base dtype Estimate uses: BaseDType, or what Auto
// picks for the method and device.
func (o Options) BaseDTypeResolved() DType { return o.baseDType() }

// ActDTypeResolved is the activation dtype Estimate uses.
func (o Options) ActDTypeResolved() DType { return o.actDType() }

func (o Options) actDType() DType {
	if o.ActDType != Auto {
		return o.ActDType
	}
	if o.Device == CUDA {
		return BF16
	}
	return F32
}

func (o Options) baseDType() DType {
	if o.BaseDType != Auto {
		return o.BaseDType
	}
	switch {
	case o.Method == QLoRA:
		return NF4
	case o.Method == Full || o.Device == CPU:
		return F32
	}
	return BF16
}

// Estimate is the peak memory of training cfg with opts on one device.
//
// It mirrors peertune's buffers: model.New's flat buffers (Base; LoRA
// Params; Grads, M and V in Params' layout, all f32), the activations of
// model.ensureActs (every layer's set, or one shared set under Recompute,
// plus every layer's input), the backward scratch, the CPU backend's
// attention tiles (per worker, O(64 × seq)) and RoPE tables, and the host
// copy of the base weights that loading makes. On a GPU activations are
// bf16 by default (statistics stay f32; see Options.ActDType) and a CUDA context and cuBLAS workspace are
// added. QLoRA is estimated as bitsandbytes runs it (NF4 projections,
// embeddings/lm_head/norms unquantised in the compute dtype, one projection
// dequantised at a time); peertune's model does not implement it yet.
func Estimate(cfg model.Config, opts Options) (Breakdown, error) {
	if err := cfg.Validate(); err != nil {
		return Breakdown{}, err
	}
	if err := opts.Validate(); err != nil {
		return Breakdown{}, err
	}
	lc := opts.LoRA
	if opts.Method == Full {
		lc = model.LoRAConfig{}
	}
	k := Count(cfg, lc)
	gpu := opts.Device == CUDA
	bd := opts.baseDType()
	threads := int64(opts.Threads)
	if threads == 0 {
		threads = int64(runtime.GOMAXPROCS(0))
	}

	var b Breakdown
	b.BaseParams = k.Base
	add := func(name string, bytes int64, step, load bool, why string, args ...any) {
		if bytes == 0 {
			return
		}
		b.Terms = append(b.Terms, Term{Name: name, Bytes: bytes, Why: fmt.Sprintf(why, args...), InStep: step, InLoad: load})
	}

	// The compute dtype: what activations and unquantised weights use.
	actB, actName := int64(bytesF32), "f32"
	if opts.actDType() == BF16 {
		actB, actName = bytesBF16, "bf16"
	}

	// Base weights.
	switch bd {
	case F32:
		why := "%s base parameters × 4 B (f32)"
		if opts.Method == Full {
			why += "; full fine-tuning trains them in place (Params is Base)"
		}
		add(TermBase, k.Base*bytesF32, true, true, why, commas(k.Base))
	case BF16:
		add(TermBase, k.Base*bytesBF16, true, true, "%s base parameters × 2 B (bf16, frozen)", commas(k.Base))
	case NF4:
		codes, consts := int64(0), int64(0)
		for _, p := range model.DefaultLoRATargets() {
			in, out := projDims(cfg, p)
			c, q := NF4Bytes(in * out)
			codes += int64(cfg.Layers) * c
			consts += int64(cfg.Layers) * q
		}
		add(TermBase, codes, true, true, "%s projection weights × 4 bits (NF4)", commas(k.Projections))
		add(TermBaseQuant, consts, true, true,
			"NF4 double quantisation: 1 B absmax per %d weights + 4 B per %d blocks + code books, per tensor (%d tensors)",
			nf4Block, nf4DQBlock, k.ProjectionCount)
		rest := k.Base - k.Projections
		add(TermBaseUnquantized, rest*actB, true, true,
			"embeddings, lm_head, norms and biases stay in %s (%s parameters; bitsandbytes quantises linear layers only)", actName, commas(rest))
	}

	// Trainable state: f32 Params (LoRA only: full FT's are Base), Grads, M, V.
	trainable := k.Base
	if opts.Method != Full {
		trainable = k.LoRA
		add(TermTrainable, trainable*bytesF32, true, true, "%s LoRA parameters (rank %d, %d target modules × %d layers) × 4 B (f32)",
			commas(trainable), lc.Rank, len(uniqueTargets(lc.Targets)), cfg.Layers)
	}
	b.TrainableParams = trainable
	// On the CPU Grads, M and V are untouched (not resident) until the first
	// step; cudaMalloc'd memory counts at once.
	add(TermGrads, trainable*bytesF32, true, gpu, "one f32 gradient per trainable parameter (Grads, the all-reduced buffer)")
	add(TermAdamW, 2*trainable*bytesF32, true, gpu, "AdamW's m and v, f32, one each per trainable parameter")

	// Activations (model.ensureActs).
	L, C, I := int64(cfg.Layers), int64(cfg.Hidden), int64(cfg.Intermediate)
	Q, KV, H, V := int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.Heads), int64(cfg.Vocab)
	M := int64(opts.MicroBatch) * int64(opts.SeqLen)
	b.Tokens = M
	var r, nAdapters int64
	if opts.Method != Full {
		r, nAdapters = int64(lc.Rank), int64(len(uniqueTargets(lc.Targets)))
	}
	add(TermLayerInputs, (L+1)*M*C*actB, true, false,
		"%d residual-stream tensors [%d tokens, %d] (each layer's input and the last output), %s; kept with and without recompute",
		L+1, M, C, actName)
	perLayer := (3*M*C+2*M*Q+2*M*KV+3*M*I+nAdapters*M*r)*actB + (2*M+M*H)*bytesF32
	sets, setsWhy := L, fmt.Sprintf("all %d layers", L)
	if opts.Recompute {
		sets, setsWhy = 1, "one shared set (--recompute: recomputed layer by layer in the backward pass)"
	}
	add(TermLayerActs, sets*perLayer, true, false,
		"%s × (xn1, xn2, x2 [M, hidden]; q, att [M, %d]; k, v [M, %d]; gate, up, act [M, %d]; LoRA x·Aᵀ [M, r] per adapter; rstd ×2 and lse f32), M = %d tokens",
		setsWhy, Q, KV, I, M)
	add(TermFinalNorm, M*C*actB+2*M*bytesF32, true, false, "final RMSNorm output [M, hidden], its rstd and the per-token losses")
	add(TermLogits, M*V*bytesF32, true, false, "[%d tokens, vocab %d] × 4 B (f32 in every precision); CrossEntropy overwrites them with dlogits in place", M, V)
	bwd := (2*M*C + 3*M*Q + 3*M*KV + 3*M*I + M*r) * bytesF32
	bwdWhy := "one set shared by all layers, f32 (gradients are f32 in every precision): dRes, dxn [M, hidden]; dAtt, dq, dq_rope [M, qDim]; dk, dv, dk_rope [M, kvDim]; dAct, dGate, dUp [M, inter]"
	if r > 0 {
		bwdWhy += "; dh [M, r]"
	}
	if opts.Method != Full && lc.Dropout > 0 {
		bwd += M * max(C, Q, I) * (actB + bytesF32)
		bwdWhy += fmt.Sprintf("; LoRA dropout input (%s) and its gradient (f32) [M, max(hidden, qDim, inter)]", actName)
	}
	add(TermBackward, bwd, true, false, "%s", bwdWhy)
	if gpu && opts.actDType() == BF16 {
		// model.Options.Precision BF16: the forward pass reads a bf16 copy
		// of the trainable parameters (their f32 master is Params).
		add(TermWorkingCopy, trainable*bytesBF16, true, true, "bf16 working copy of the %s trainable parameters that the GEMMs read (the f32 master stays in Params)", commas(trainable))
		st := bf16Staging(cfg, M, r)
		add(TermStaging, st, true, false,
			"kernels/cuda scratch: f32 copies of the bf16 arguments of the ops that stage them (attention's q, k, v, out; largest per argument slot) and the bf16 copy of an f32 GEMM operand (dlogits [M, vocab] for lm_head's input gradient)")
	}

	// Workspaces.
	S, mb := int64(opts.SeqLen), int64(opts.MicroBatch)
	if gpu {
		if S >= cudaAttnGEMMMinSeq {
			// kernels/cuda makes the scores of kc kv heads at a time with batched GEMMs:
			// two [kc, T, T] f32 buffers, kc = min(kvHeads, budget/(8T²)),
			// at least 1. Over every batch length T <= seq that is at most
			// 8·kvHeads·seq² and at most max(budget, 8·seq²).
			kvh := int64(cfg.KVHeads)
			sc := min(8*kvh*S*S, max(cudaAttnScoresBudget, 8*S*S))
			add(TermAttention, mb*H*S*bytesF32+sc, true, false,
				"attention through tensor-core GEMMs (seq >= %d): scores and their gradients of as many heads as fit %d MiB (at least one), 2 × [heads, seq, seq] f32, + rowsum(dO∘O) [batch, heads, seq]",
				cudaAttnGEMMMinSeq, cudaAttnScoresBudget>>20)
		} else {
			add(TermAttention, mb*H*S*bytesF32, true, false, "attention backward's rowsum(dO∘O) [batch, heads, seq] f32; tiles live in shared memory")
		}
		add(TermCUBLAS, CUBLASWorkspaceBytes, true, true, "cuBLAS workspace (32 MiB on Hopper)")
	} else {
		nb := ceilDiv(S, attnBlock)
		workers := min(threads, mb*H*nb, maxWorkersSane)
		add(TermAttention, workers*2*attnBlock*S*bytesF32+mb*H*S*bytesF32, true, false,
			"%d workers × 2 tiles [%d, seq %d] f32 (kernels/cpu, kept by the backend) + rowsum(dO∘O) [batch, heads, seq]", workers, attnBlock, S)
		pos := max(S, 256)
		add(TermRoPE, pos*int64(cfg.HeadDim())*bytesF32, true, false, "cos and sin [%d positions, headDim/2] f32", pos)
	}
	if bd == NF4 {
		add(TermDequant, k.LargestProj*actB, true, false, "one projection weight dequantised to %s at a time (%s elements, the largest)", actName, commas(k.LargestProj))
	}

	// Loading: InitBase/LoadBaseFile go tensor by tensor through one host
	// []float32 of the tensor (as read or generated), copied into Base. On a
	// GPU that is host memory, outside the device budget.
	if !gpu {
		why := "while loading only: the largest tensor as read or generated, f32 (model.InitBase/LoadBaseFile copy tensor by tensor)"
		if bd == NF4 {
			why += ", before it is quantised"
		}
		add(TermLoadStaging, k.LargestTensor*bytesF32, false, true, "%s", why)
	}

	if gpu {
		add(TermCUDAContext, CUDAContextBytes, true, true, "CUDA context, cuBLAS and NCCL (fixed; see memory.CUDAContextBytes)")
	} else {
		add(TermRuntime, CPURuntimeBytes+threads*CPURuntimePerThread, true, true,
			"Go runtime, binary and data set (64 MiB) + OpenBLAS buffers (32 MiB × %d threads); fixed", threads)
	}

	for _, t := range b.Terms {
		if t.InStep {
			b.Step += t.Bytes
		}
		if t.InLoad {
			b.Load += t.Bytes
		}
	}
	b.Total = max(b.Step, b.Load)
	return b, nil
}

func uniqueTargets(ts []model.Proj) []model.Proj {
	var out []model.Proj
	seen := map[model.Proj]bool{}
	for _, t := range ts {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// commas formats n as 1,234,567.
func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var sb strings.Builder
	if neg {
		sb.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			sb.WriteByte(',')
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// bf16Staging is the scratch kernels/cuda keeps for a bf16 step of
// model.Model: staging slot i of the ops that stage (f32, mixed.go) grows
// to the largest i-th bf16 argument any of them stages, and GEMM operand
// slot 0 to the largest f32 dOut a backward GEMM rounds to bf16 (its other
// operand is a bf16 activation or weight). Add, RMSNorm, RoPE, SwiGLU,
// Dropout and their backward passes read bf16 themselves and stage nothing
// (rstd and the gradients they add into are f32). The op lists mirror
// trainer/model's step.
func bf16Staging(c model.Config, M, r int64) int64 {
	C, I, Q, KV := int64(c.Hidden), int64(c.Intermediate), int64(c.QDim()), int64(c.KVDim())
	ops := [][]int64{
		{M * Q, M * Q, M * KV, M * KV}, // Attention: out, q, k, v
		{M * Q, M * KV, M * KV, M * Q}, // AttentionBackward: q, k, v, out
	}
	var slots []int64
	for _, op := range ops {
		for i, n := range op {
			if i == len(slots) {
				slots = append(slots, 0)
			}
			slots[i] = max(slots[i], n)
		}
	}
	var total int64
	for _, n := range slots {
		total += n * bytesF32
	}
	// The backward GEMMs' f32 dOut: dlogits [M, vocab], dRes [M, hidden],
	// dGate/dUp [M, inter], dq/dk/dv, dh [M, r].
	return total + M*max(int64(c.Vocab), C, I, Q, KV, r)*bytesBF16
}
