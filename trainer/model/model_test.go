package model

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu"
)

func newCPU(t testing.TB) kernels.Backend {
	t.Helper()
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatalf("cpu backend: %v", err)
	}
	return be
}

func tinyConfig(tied, bias bool) Config {
	return Config{Hidden: 32, Intermediate: 48, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 37,
		RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 64, TiedEmbed: tied, QKVBias: bias}
}

func randomBatch(rng *rand.Rand, c Config, rows, seq int) *Batch {
	b := &Batch{Rows: rows, Seq: seq}
	for r := 0; r < rows; r++ {
		for t := 0; t < seq; t++ {
			b.Tokens = append(b.Tokens, int32(rng.IntN(c.Vocab)))
			tgt := int32(rng.IntN(c.Vocab))
			if t < 2 || t == seq-1 {
				tgt = kernels.IgnoreIndex
			}
			b.Targets = append(b.Targets, tgt)
			b.Positions = append(b.Positions, int32(t))
		}
	}
	return b
}

// randomize fills a buffer with N(0, std²) values (and norms near 1 so they matter).
func randomize(t testing.TB, m *Model, buf kernels.Buffer, lay *Layout, std float64, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	host := make([]float32, lay.Total)
	for _, ten := range lay.Tensors {
		for i := ten.Offset; i < ten.Offset+ten.Size(); i++ {
			v := rng.NormFloat64() * std
			if ten.NoDecay && !isBias(ten.Name) {
				v += 1
			}
			host[i] = float32(v)
		}
	}
	if err := m.be.CopyIn(buf, host); err != nil {
		t.Fatal(err)
	}
}

func newTestModel(t testing.TB, c Config, opts Options) *Model {
	t.Helper()
	m, err := New(newCPU(t), c, opts)
	if err != nil {
		t.Fatal(err)
	}
	randomize(t, m, m.Base, m.BaseLayout, 0.2, 1)
	if opts.Method == MethodLoRA {
		randomize(t, m, m.Params, m.TrainLayout, 0.2, 2)
	}
	return m
}

func hostCopy(t testing.TB, m *Model, b kernels.Buffer) []float64 {
	t.Helper()
	f := make([]float32, b.Len())
	if err := m.be.CopyOut(f, b); err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out
}

func loraOpts(dropout float64) Options {
	return Options{Method: MethodLoRA, LoRA: LoRAConfig{Rank: 4, Alpha: 8, Dropout: dropout, Targets: DefaultLoRATargets()}}
}

// TestDirectionalDerivative checks the whole backward pass against a central
// difference of the loss along a random direction of the trainable
// parameters, for LoRA (with dropout: the mask must match between passes) and
// for full fine-tuning with tied embeddings and biases.
func TestDirectionalDerivative(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		opts Options
	}{
		{"lora", tinyConfig(false, false), loraOpts(0)},
		{"lora-dropout", tinyConfig(false, true), loraOpts(0.2)},
		{"lora-recompute", tinyConfig(true, false), Options{Method: MethodLoRA, Recompute: true, LoRA: LoRAConfig{Rank: 3, Alpha: 5, Dropout: 0.1, Targets: []Proj{ProjQ, ProjV, ProjDown}}}},
		{"full-tied-bias", tinyConfig(true, true), Options{Method: MethodFull}},
		{"full-untied", tinyConfig(false, false), Options{Method: MethodFull}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestModel(t, tc.cfg, tc.opts)
			rng := rand.New(rand.NewPCG(3, 4))
			b := randomBatch(rng, tc.cfg, 2, 9)
			n := b.CountTargets()
			const seed = 77
			if err := m.ZeroGrads(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := m.ForwardBackward(b, 1/float32(n), seed); err != nil {
				t.Fatal(err)
			}
			grad := hostCopy(t, m, m.Grads)
			theta := hostCopy(t, m, m.Params)
			dir := make([]float64, len(theta))
			var analytic float64
			for i := range dir {
				dir[i] = rng.NormFloat64()
				analytic += dir[i] * grad[i]
			}
			lossAt := func(eps float64) float64 {
				p := make([]float32, len(theta))
				for i := range p {
					p[i] = float32(theta[i] + eps*dir[i])
				}
				if err := m.be.CopyIn(m.Params, p); err != nil {
					t.Fatal(err)
				}
				s, cnt, err := m.ForwardBackward(b, 0, seed)
				if err != nil {
					t.Fatal(err)
				}
				return s / float64(cnt)
			}
			const eps = 1e-3
			numeric := (lossAt(eps) - lossAt(-eps)) / (2 * eps)
			rel := math.Abs(numeric-analytic) / math.Max(math.Abs(analytic), 1e-3)
			t.Logf("directional derivative: analytic %.6g numeric %.6g rel %.2e", analytic, numeric, rel)
			if rel > 2e-2 {
				t.Fatalf("directional derivative mismatch: analytic %.6g numeric %.6g (rel %.2e)", analytic, numeric, rel)
			}
		})
	}
}

// TestRecomputeMatchesStored: recomputing activations must give the very same
// gradients as keeping them.
func TestRecomputeMatchesStored(t *testing.T) {
	for _, method := range []Method{MethodLoRA, MethodFull} {
		var grads [2][]float64
		for i, rec := range []bool{false, true} {
			opts := loraOpts(0.1)
			opts.Method = method
			opts.Recompute = rec
			m := newTestModel(t, tinyConfig(false, true), opts)
			b := randomBatch(rand.New(rand.NewPCG(5, 6)), m.Cfg, 2, 7)
			if _, _, err := m.ForwardBackward(b, 0.1, 9); err != nil {
				t.Fatal(err)
			}
			grads[i] = hostCopy(t, m, m.Grads)
		}
		for i := range grads[0] {
			if grads[0][i] != grads[1][i] {
				t.Fatalf("%s: grad[%d] stored %g != recomputed %g", method, i, grads[0][i], grads[1][i])
			}
		}
	}
}

// TestLoRAZeroBIsBase: PEFT's initialisation (B = 0) leaves the base model's
// output unchanged, and the LoRA model's trainable buffer holds only adapters.
func TestLoRAZeroBIsBase(t *testing.T) {
	c := tinyConfig(false, false)
	lora := newTestModel(t, c, loraOpts(0))
	if err := lora.InitLoRA(3); err != nil {
		t.Fatal(err)
	}
	full, err := New(newCPU(t), c, Options{Method: MethodFull})
	if err != nil {
		t.Fatal(err)
	}
	randomize(t, full, full.Base, full.BaseLayout, 0.2, 1)
	b := randomBatch(rand.New(rand.NewPCG(1, 1)), c, 1, 8)
	l1, err := lora.Logits(b)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := full.Logits(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l1 {
		if l1[i] != l2[i] {
			t.Fatalf("logit %d: lora with B=0 gives %g, base gives %g", i, l1[i], l2[i])
		}
	}
	// 2 layers × 7 targets × rank 4 × (in + out)
	want := 0
	for p := ProjQ; p < numProj; p++ {
		in, out := p.dims(c)
		want += c.Layers * 4 * (in + out)
	}
	if lora.TrainableParams() != want {
		t.Fatalf("trainable params %d, want %d", lora.TrainableParams(), want)
	}
	if lora.AllParams() != full.AllParams()+want {
		t.Fatalf("all params %d, want base %d + adapters %d", lora.AllParams(), full.AllParams(), want)
	}
}

// TestLoRAFrozenBase: a LoRA step must leave the base weights untouched.
func TestLoRAFrozenBase(t *testing.T) {
	m := newTestModel(t, tinyConfig(true, true), loraOpts(0.1))
	before := hostCopy(t, m, m.Base)
	b := randomBatch(rand.New(rand.NewPCG(7, 7)), m.Cfg, 2, 6)
	if _, _, err := m.ForwardBackward(b, 0.5, 1); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(kernels.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, Step: 1, GradScale: 1}); err != nil {
		t.Fatal(err)
	}
	after := hostCopy(t, m, m.Base)
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("base weight %d changed in LoRA mode", i)
		}
	}
	if g := hostCopy(t, m, m.Grads); allZero(g) {
		t.Fatal("LoRA gradients are all zero")
	}
}

func allZero(v []float64) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

func TestBatchValidate(t *testing.T) {
	c := tinyConfig(false, false)
	good := randomBatch(rand.New(rand.NewPCG(1, 2)), c, 1, 4)
	bad := []func(b *Batch){
		func(b *Batch) { b.Tokens[1] = int32(c.Vocab) },
		func(b *Batch) { b.Targets[1] = -5 },
		func(b *Batch) { b.Positions[0] = int32(c.MaxPositions) },
		func(b *Batch) { b.Tokens = b.Tokens[:3] },
	}
	m := newTestModel(t, c, loraOpts(0))
	for i, f := range bad {
		b := *good
		b.Tokens = append([]int32(nil), good.Tokens...)
		b.Targets = append([]int32(nil), good.Targets...)
		b.Positions = append([]int32(nil), good.Positions...)
		f(&b)
		if _, err := m.Logits(&b); err == nil {
			t.Errorf("case %d: bad batch accepted", i)
		}
	}
}

// TestPresetParamCounts checks the layouts against PEFT's printout for
// Llama-3-8B with r=16 on q,k,v,o (13,631,488 of 8,043,892,736) and the
// published size of SmolLM2-135M.
func TestPresetParamCounts(t *testing.T) {
	c := Presets()["llama3-8b"]
	base := baseLayout(c).Total
	lora := loraLayout(c, LoRAConfig{Rank: 16, Alpha: 32, Targets: []Proj{ProjQ, ProjK, ProjV, ProjO}}).Total
	if lora != 13631488 || base+lora != 8043892736 {
		t.Fatalf("llama3-8b: base %d, lora %d; PEFT says 13,631,488 of 8,043,892,736", base, lora)
	}
	if n := baseLayout(Presets()["smollm2-135m"]).Total; n != 134515008 {
		t.Fatalf("smollm2-135m has %d parameters, want 134,515,008", n)
	}
}

// TestLoadBaseBadFiles: a checkpoint that does not fit the config is an error
// naming the file and the tensor, never a panic.
func TestLoadBaseBadFiles(t *testing.T) {
	c := tinyConfig(false, false)
	m := newTestModel(t, c, Options{Method: MethodFull})
	dir := t.TempDir()
	if err := m.SaveBase(dir); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "model.safetensors")
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// A model whose config has a different hidden size: every shape disagrees.
	wrong := c
	wrong.Intermediate = 50
	mw, err := New(newCPU(t), wrong, Options{Method: MethodFull})
	if err != nil {
		t.Fatal(err)
	}
	if err := mw.LoadBase(good); err == nil || !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), "mlp.gate_proj.weight") {
		t.Errorf("shape mismatch: %v", err)
	}
	// Tied config reading an untied file is fine (lm_head ignored); the
	// reverse misses lm_head.weight.
	tied := tinyConfig(true, false)
	mt := newTestModel(t, tied, Options{Method: MethodFull})
	tdir := t.TempDir()
	if err := mt.SaveBase(tdir); err != nil {
		t.Fatal(err)
	}
	if err := m.LoadBase(filepath.Join(tdir, "model.safetensors")); err == nil || !strings.Contains(err.Error(), `"lm_head.weight" not found`) {
		t.Errorf("missing tensor: %v", err)
	}
	truncated := filepath.Join(dir, "truncated.safetensors")
	os.WriteFile(truncated, raw[:len(raw)/2], 0o644)
	if err := m.LoadBase(truncated); err == nil || !strings.Contains(err.Error(), "truncated.safetensors") {
		t.Errorf("truncated file: %v", err)
	}
	// The round trip through SaveBase/LoadBase is exact.
	m2, err := New(newCPU(t), c, Options{Method: MethodFull})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.LoadBase(good); err != nil {
		t.Fatal(err)
	}
	a, b := hostCopy(t, m, m.Base), hostCopy(t, m2, m2.Base)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("round trip changed weight %d", i)
		}
	}
}
