package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer/memory"
	"github.com/peertune/peertune/trainer/model"
)

// TestModelPrecisionOnFakeGPU trains a tiny Llama for a few AdamW steps
// three ways from the same weights and batches: on the CPU backend (f32),
// on the CUDA backend in f32 and in bf16 (model.Options.Precision), the GPU
// being the fake one here (and a real one too when present). The f32 GPU
// run must follow the CPU's losses to float32 rounding; the bf16 run must
// follow them to bf16 rounding and learn as fast (its loss falls by as much),
// which fails if the working copy went stale (the forward pass would keep
// reading the initial weights) or a bf16 activation were mishandled.
func TestModelPrecisionOnFakeGPU(t *testing.T) {
	cfg := model.Config{Hidden: 32, Intermediate: 48, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 37,
		RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 64, TiedEmbed: true, QKVBias: true}
	lora := model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1, Targets: model.DefaultLoRATargets()}
	for _, method := range []model.Method{model.MethodLoRA, model.MethodFull} {
		t.Run(method.String(), func(t *testing.T) {
			opts := model.Options{Method: method, LoRA: lora}
			cpuBe, err := cpu.New(cpu.DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			ref := trainTiny(t, cpuBe, cfg, opts)
			for bname, be := range backendsForTest(t) {
				f32 := trainTiny(t, be, cfg, opts)
				o16 := opts
				o16.Precision = kernels.BF16
				b16 := trainTiny(t, be, cfg, o16)
				for i := range ref {
					if d := math.Abs(f32[i] - ref[i]); d > 1e-4*math.Abs(ref[i]) {
						t.Errorf("%s f32 step %d: loss %.7f, CPU %.7f", bname, i, f32[i], ref[i])
					}
					if d := math.Abs(b16[i] - ref[i]); d > 3e-2*math.Abs(ref[i]) {
						t.Errorf("%s bf16 step %d: loss %.5f, CPU f32 %.5f (beyond bf16 rounding)", bname, i, b16[i], ref[i])
					}
				}
				n := len(ref) - 1
				fall, fall16 := ref[0]-ref[n], b16[0]-b16[n]
				if fall <= 0 || math.Abs(fall16-fall) > 0.2*fall {
					t.Errorf("%s: loss fell by %.4f in bf16 vs %.4f in f32 over %d steps", bname, fall16, fall, n)
				}
				t.Logf("%s %v: CPU f32 %.5f -> %.5f, GPU f32 %.5f -> %.5f, GPU bf16 %.5f -> %.5f",
					bname, method, ref[0], ref[n], f32[0], f32[n], b16[0], b16[n])
			}
			// Attention through batched GEMMs (what training lengths use on
			// a GPU) follows the same trajectory.
			gb, _ := newFakeBackend(t, false)
			gb.attn = "gemm"
			gl := trainTiny(t, gb, cfg, opts)
			for i := range ref {
				if d := math.Abs(gl[i] - ref[i]); d > 1e-4*math.Abs(ref[i]) {
					t.Errorf("fake GPU, GEMM attention, step %d: loss %.7f, CPU %.7f", i, gl[i], ref[i])
				}
			}
		})
	}
}

// trainTiny runs 8 AdamW steps of one micro-batch each from fixed weights
// and returns the per-step mean losses.
func trainTiny(t *testing.T, be kernels.Backend, cfg model.Config, opts model.Options) []float64 {
	t.Helper()
	m, err := model.New(be, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if opts.Precision == kernels.BF16 {
		if opts.Method == model.MethodLoRA && m.Base.DType() != kernels.BF16 {
			t.Errorf("bf16 LoRA: frozen base stored as %v, want bf16", m.Base.DType())
		}
		if m.Params.DType() != kernels.F32 || m.Grads.DType() != kernels.F32 {
			t.Errorf("bf16: master params %v, grads %v; want f32", m.Params.DType(), m.Grads.DType())
		}
	}
	if err := m.InitBase(7); err != nil {
		t.Fatal(err)
	}
	if opts.Method == model.MethodLoRA {
		if err := m.InitLoRA(8); err != nil {
			t.Fatal(err)
		}
		// B = 0 at PEFT init; give it values so the adapters' gradients
		// flow through every path from the first step.
		host := make([]float32, m.TrainLayout.Total)
		if err := be.CopyOut(host, m.Params); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(9, 9))
		for _, ten := range m.TrainLayout.Tensors {
			for i := ten.Offset; i < ten.Offset+ten.Size(); i++ {
				if host[i] == 0 {
					host[i] = float32(rng.NormFloat64() * 0.05)
				}
			}
		}
		if err := be.CopyIn(m.Params, host); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	b := &model.Batch{Rows: 2, Seq: 8}
	for r := 0; r < b.Rows; r++ {
		for p := 0; p < b.Seq; p++ {
			b.Tokens = append(b.Tokens, int32(rng.IntN(cfg.Vocab)))
			tgt := int32(rng.IntN(cfg.Vocab))
			if p == 0 {
				tgt = kernels.IgnoreIndex
			}
			b.Targets = append(b.Targets, tgt)
			b.Positions = append(b.Positions, int32(p))
		}
	}
	var losses []float64
	for step := 1; step <= 8; step++ {
		if err := m.ZeroGrads(); err != nil {
			t.Fatal(err)
		}
		n := b.CountTargets()
		sum, _, err := m.ForwardBackward(b, 1/float32(n), uint64(step))
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, sum/float64(n))
		if err := m.Update(kernels.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: step, GradScale: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return losses
}

// TestEstimateMatchesFakeGPUMemory: the device memory training really
// allocates (model buffers, activations, the backend's scratch, bf16
// staging, attention score buffers) is what trainer/memory estimates for a
// GPU, less the CUDA context and cuBLAS workspace that a fake GPU does not
// have, in each precision and method, and stays within it when the
// micro-batches' lengths vary (as padding to each batch's longest sequence
// makes them): the estimate at the longest length is an upper bound.
func TestEstimateMatchesFakeGPUMemory(t *testing.T) {
	cfg := model.Config{Hidden: 128, Intermediate: 352, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 300,
		RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 320, TiedEmbed: false}
	lora := model.LoRAConfig{Rank: 8, Alpha: 16, Dropout: 0.1, Targets: model.DefaultLoRATargets()}
	type run struct {
		method    model.Method
		prec      kernels.DType
		recompute bool
		rows      int
		lens      []int // micro-batch lengths, in order; >= 256: attention through GEMMs
	}
	var runs []run
	for _, method := range []model.Method{model.MethodLoRA, model.MethodFull} {
		for _, prec := range []kernels.DType{kernels.F32, kernels.BF16} {
			for _, recompute := range []bool{false, true} {
				runs = append(runs, run{method, prec, recompute, 2, []int{32, 32}})
			}
		}
	}
	runs = append(runs,
		run{model.MethodLoRA, kernels.BF16, false, 1, []int{256, 256}},
		run{model.MethodLoRA, kernels.BF16, false, 1, []int{299, 300}},
		run{model.MethodLoRA, kernels.BF16, false, 1, []int{200, 300, 250}},
		run{model.MethodFull, kernels.F32, false, 1, []int{120, 260}})
	for _, r := range runs {
		name := fmt.Sprintf("%v/%v/recompute=%v/lens=%v", r.method, r.prec, r.recompute, r.lens)
		t.Run(name, func(t *testing.T) {
			be, f := newFakeBackend(t, false)
			opts := model.Options{Method: r.method, LoRA: lora, Precision: r.prec, Recompute: r.recompute}
			m, err := model.New(be, cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			if err := m.InitBase(1); err != nil {
				t.Fatal(err)
			}
			longest := 0
			for step, seq := range r.lens {
				longest = max(longest, seq)
				b := &model.Batch{Rows: r.rows, Seq: seq}
				for i := 0; i < r.rows*seq; i++ {
					b.Tokens = append(b.Tokens, int32(i*7%cfg.Vocab))
					b.Targets = append(b.Targets, int32(i*11%cfg.Vocab))
					b.Positions = append(b.Positions, int32(i%seq))
				}
				if _, _, err := m.ForwardBackward(b, 1e-2, 1); err != nil {
					t.Fatal(err)
				}
				if _, err := m.GradSumSquares(); err != nil {
					t.Fatal(err)
				}
				if err := m.Update(kernels.AdamWParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Step: step + 1, GradScale: 1}); err != nil {
					t.Fatal(err)
				}
			}
			mo := memory.FromModel(opts)
			mo.MicroBatch, mo.SeqLen, mo.Device = r.rows, longest, memory.CUDA
			mo.ActDType, mo.BaseDType = memory.F32, memory.F32
			if r.prec == kernels.BF16 {
				mo.ActDType = memory.BF16
				if r.method == model.MethodLoRA {
					mo.BaseDType = memory.BF16
				}
			}
			est, err := memory.Estimate(cfg, mo)
			if err != nil {
				t.Fatal(err)
			}
			want := est.Step - est.Term(memory.TermCUDAContext).Bytes - est.Term(memory.TermCUBLAS).Bytes
			got := int64(f.peakBytes)
			// The backend's small scratch (tokens, partial sums, RoPE
			// tables: a few KiB each, 4 KiB at least) is not estimated.
			if d := got - want; d < -want/100 || d > want/50+256<<10 {
				t.Errorf("peak device memory %d, estimate %d (%+.1f%%)", got, want, 100*float64(d)/float64(want))
			}
			t.Logf("peak %d bytes, estimate %d (%+.2f%%)", got, want, 100*float64(got-want)/float64(want))
		})
	}
}
