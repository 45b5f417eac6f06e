package memory

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer/model"
)

func preset(t *testing.T, name string) model.Config {
	t.Helper()
	c, ok := model.Presets()[name]
	if !ok {
		t.Fatalf("no preset %q", name)
	}
	return c
}

// Published parameter counts (Hugging Face model cards / num_parameters()).
func TestPresetParameterCounts(t *testing.T) {
	want := map[string]int64{
		"llama2-7b":    6_738_415_616,
		"llama3-8b":    8_030_261_248,
		"llama3-70b":   70_553_706_496,
		"mistral-7b":   7_241_732_096,
		"qwen2.5-7b":   7_615_616_512,
		"smollm2-135m": 134_515_008,
	}
	for name, n := range want {
		if got := Count(preset(t, name), model.LoRAConfig{}).Base; got != n {
			t.Errorf("%s: %d parameters, published %d", name, got, n)
		}
	}
}

func TestLlama3PEFTCounts(t *testing.T) {
	tg, err := model.ParseTargets("q_proj,k_proj,v_proj,o_proj")
	if err != nil {
		t.Fatal(err)
	}
	k := Count(preset(t, "llama3-8b"), model.LoRAConfig{Rank: 16, Targets: tg})
	if k.LoRA != 13_631_488 || k.Base+k.LoRA != 8_043_892_736 {
		t.Errorf("llama3-8b r16 qkvo: trainable %d, all %d; PEFT prints 13,631,488 and 8,043,892,736", k.LoRA, k.Base+k.LoRA)
	}
}

// Count must equal model.New's layouts: that is what the buffers are.
func TestCountMatchesModel(t *testing.T) {
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tied, bias bool
		targets    string
	}{{false, false, "all"}, {true, true, "q_proj,v_proj"}, {true, false, "down_proj,gate_proj,gate_proj"}} {
		c := model.Config{Hidden: 48, Intermediate: 80, Layers: 3, Heads: 6, KVHeads: 2, Vocab: 50,
			RopeTheta: 1e4, RMSEps: 1e-5, MaxPositions: 64, TiedEmbed: tc.tied, QKVBias: tc.bias}
		tg, err := model.ParseTargets(tc.targets)
		if err != nil {
			t.Fatal(err)
		}
		lc := model.LoRAConfig{Rank: 5, Alpha: 10, Targets: tg}
		m, err := model.New(be, c, model.Options{Method: model.MethodLoRA, LoRA: lc})
		if err != nil {
			t.Fatal(err)
		}
		k := Count(c, lc)
		if int64(m.AllParams()) != k.Base+k.LoRA || int64(m.TrainableParams()) != k.LoRA {
			t.Errorf("%+v: model has %d/%d params, Count says %d/%d", tc, m.TrainableParams(), m.AllParams(), k.LoRA, k.Base+k.LoRA)
		}
		dir := t.TempDir()
		if err := m.SaveAdapter(dir, "x"); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(dir, "adapter_model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if got := AdapterFileBytes(c, lc, 4); got != st.Size() {
			t.Errorf("%+v: AdapterFileBytes %d, SaveAdapter wrote %d", tc, got, st.Size())
		}
		m.Free()
	}
}

func TestNF4Bytes(t *testing.T) {
	codes, consts := NF4Bytes(4096 * 4096)
	// 16,777,216 weights: 8 MiB of codes, 262,144 blocks → 262,144 B of
	// 8-bit absmax + 1,024 fp32 second-level scales + offset + code books.
	if codes != 8<<20 || consts != 262144+4*1024+4+4*(16+256) {
		t.Errorf("NF4Bytes(4096²) = %d, %d", codes, consts)
	}
	// ≈ 4.127 bits per weight, QLoRA's figure for double quantisation.
	bits := float64(8*(codes+consts)) / (4096 * 4096)
	if bits < 4.12 || bits > 4.135 {
		t.Errorf("%.4f bits per weight", bits)
	}
}

func lora(rank int, targets string) model.LoRAConfig {
	tg, err := model.ParseTargets(targets)
	if err != nil {
		panic(err)
	}
	return model.LoRAConfig{Rank: rank, Alpha: 2 * float64(rank), Targets: tg}
}

func TestEstimateTerms(t *testing.T) {
	c := preset(t, "llama3-8b")
	b, err := Estimate(c, Options{Method: LoRA, LoRA: lora(16, "all"), MicroBatch: 2, SeqLen: 1024, Device: CUDA})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Term(TermBase).Bytes; got != 2*8_030_261_248 {
		t.Errorf("bf16 base %d", got)
	}
	if got := b.Term(TermLogits).Bytes; got != 2*1024*128256*4 {
		t.Errorf("logits %d: want tokens × vocab × f32 (f32 in bf16 training too)", got)
	}
	if got, want := b.Term(TermWorkingCopy).Bytes, 2*b.TrainableParams; got != want {
		t.Errorf("bf16 working copy %d, want 2 B × %d trainable", got, b.TrainableParams)
	}
	// Staging: dlogits [M, vocab] in bf16 dominates, plus the f32 slots of
	// attention's bf16 q, k, v and out (slots: max(out, q), max(q, k),
	// max(k, v), max(v, out) = 3 [M, qDim] + 1 [M, kvDim]). The SwiGLU,
	// RMSNorm, RoPE and Add kernels read bf16 themselves: no [M, inter] slot.
	M := int64(2 * 1024)
	if got, want := b.Term(TermStaging).Bytes, M*128256*2+M*(3*4096+1024)*4; got != want {
		t.Errorf("bf16 staging %d, want %d", got, want)
	}
	if f32, _ := Estimate(c, Options{Method: LoRA, LoRA: lora(16, "all"), MicroBatch: 2, SeqLen: 1024, Device: CUDA, ActDType: F32}); f32.Term(TermWorkingCopy).Bytes != 0 || f32.Term(TermStaging).Bytes != 0 {
		t.Error("f32 activations on a GPU: no working copy and no staging")
	}
	if b.Term(TermCUDAContext).Bytes != CUDAContextBytes || b.Term(TermRuntime).Bytes != 0 || b.Term(TermLoadStaging).Bytes != 0 {
		t.Error("GPU terms: want a CUDA context, no Go runtime term, no host staging")
	}
	rc, _ := Estimate(c, Options{Method: LoRA, LoRA: lora(16, "all"), MicroBatch: 2, SeqLen: 1024, Device: CUDA, Recompute: true})
	if rc.Term(TermLayerActs).Bytes*int64(c.Layers) != b.Term(TermLayerActs).Bytes {
		t.Error("recompute keeps one layer's activations instead of all")
	}
	if rc.Term(TermLayerInputs) != b.Term(TermLayerInputs) {
		t.Error("recompute keeps every layer's input")
	}
	var sum int64
	for _, term := range b.Terms {
		if term.InStep {
			sum += term.Bytes
		}
	}
	if sum != b.Step || b.Total != max(b.Step, b.Load) {
		t.Error("Step/Total are not the sums")
	}

	q, err := Estimate(c, Options{Method: QLoRA, LoRA: lora(16, "all"), MicroBatch: 1, SeqLen: 512, Device: CUDA})
	if err != nil {
		t.Fatal(err)
	}
	k := Count(c, model.LoRAConfig{})
	if got := q.Term(TermBase).Bytes; got != k.Projections/2 {
		t.Errorf("nf4 codes %d, want %d", got, k.Projections/2)
	}
	if got := q.Term(TermBaseUnquantized).Bytes; got != 2*(k.Base-k.Projections) {
		t.Errorf("unquantised part %d", got)
	}

	full, _ := Estimate(c, Options{Method: Full, MicroBatch: 1, SeqLen: 512, Device: CUDA})
	if full.Term(TermBase).Bytes != 4*k.Base || full.Term(TermGrads).Bytes != 4*k.Base || full.Term(TermAdamW).Bytes != 8*k.Base || full.Term(TermTrainable).Bytes != 0 {
		t.Error("full FT: f32 base = params, grads, m and v, and no separate trainable copy")
	}

	for _, bad := range []Options{
		{Method: Full, BaseDType: BF16, MicroBatch: 1, SeqLen: 8},
		{Method: QLoRA, LoRA: lora(4, "all"), BaseDType: BF16, MicroBatch: 1, SeqLen: 8, Device: CUDA},
		{Method: LoRA, LoRA: lora(4, "all"), BaseDType: BF16, MicroBatch: 1, SeqLen: 8, Device: CPU},
		{Method: LoRA, LoRA: lora(4, "all"), MicroBatch: 0, SeqLen: 8},
		{Method: LoRA, MicroBatch: 1, SeqLen: 8},
	} {
		if _, err := Estimate(c, bad); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}

func TestEstimateJSON(t *testing.T) {
	b, err := Estimate(preset(t, "smollm2-135m"), Options{Method: LoRA, LoRA: lora(8, "all"), MicroBatch: 1, SeqLen: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Total int64            `json:"total_bytes"`
		Terms map[string]int64 `json:"terms"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Total != b.Total || got.Terms[TermLogits] != b.Term(TermLogits).Bytes || len(got.Terms) != len(b.Terms) {
		t.Errorf("json %s", raw)
	}
	if strings.Contains(string(raw), "\n") {
		t.Error("json must be one line")
	}
}

func TestPlan(t *testing.T) {
	c := preset(t, "smollm2-135m")
	opts := Options{Method: LoRA, LoRA: lora(16, "all"), SeqLen: 512, Threads: 2}
	at := func(mb int, rc bool) int64 {
		o := opts
		o.MicroBatch, o.Recompute = mb, rc
		b, err := Estimate(c, o)
		if err != nil {
			t.Fatal(err)
		}
		return b.Total
	}

	// Fits 4 but not 5 (so not 8): 4.
	ch, err := Plan(c, opts, at(4, false)+(at(5, false)-at(4, false))/2, 8)
	if err != nil || ch.MicroBatch != 4 || ch.Recompute {
		t.Errorf("budget for mb 4: got %+v, %v", ch, err)
	}
	if ch.Estimate.Total > at(4, false) {
		t.Error("the choice carries its estimate")
	}
	// Everything fits: the rank's share, no more.
	if ch, err := Plan(c, opts, 1<<50, 8); err != nil || ch.MicroBatch != 8 || ch.Recompute {
		t.Errorf("big budget: %+v, %v", ch, err)
	}
	// Micro-batch 1 does not fit without recompute, but 2 fits with it.
	if at(2, true) >= at(1, false) {
		t.Fatalf("test premise: recompute at mb 2 (%d) should need less than mb 1 without (%d)", at(2, true), at(1, false))
	}
	budget := at(1, false) - 1
	ch, err = Plan(c, opts, budget, 8)
	if err != nil || !ch.Recompute || ch.MicroBatch < 2 || at(ch.MicroBatch, true) > budget || (ch.MicroBatch < 8 && at(ch.MicroBatch+1, true) <= budget) {
		t.Errorf("budget below mb 1: got %+v, %v", ch, err)
	}
	// Forced recompute is honoured.
	o := opts
	o.Recompute = true
	if ch, err := Plan(c, o, 1<<50, 3); err != nil || !ch.Recompute || ch.MicroBatch != 3 {
		t.Errorf("forced recompute: %+v, %v", ch, err)
	}
	// Impossible: an error that names the terms (the step sets the floor:
	// loading goes tensor by tensor).
	_, err = Plan(c, opts, at(1, true)-1, 8)
	var be *BudgetError
	if !errors.As(err, &be) || be.Estimate.Total != at(1, true) {
		t.Fatalf("impossible budget: %v", err)
	}
	if ch.Estimate.Peak() != "step" {
		t.Errorf("peak is %s; loading tensor by tensor should not set it", ch.Estimate.Peak())
	}
	for _, want := range []string{"micro-batch 1", TermBase, TermLogits, "cpu"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	g := opts
	g.Device, g.MicroBatch, g.Recompute = CUDA, 1, true
	gb, err := Estimate(c, g)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Plan(c, opts, 0, 8)
	if err == nil {
		t.Error("budget 0: want an error")
	}
	g.Recompute = false
	_, err = Plan(c, g, gb.Total-1, 8)
	if !errors.As(err, &be) {
		t.Fatalf("impossible GPU budget: %v", err)
	}
	for _, want := range []string{TermCUDAContext, TermLogits, "cuda"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := Plan(c, opts, 1<<40, 0); err == nil {
		t.Error("perRank 0: want an error")
	}
}

func TestGuardHalves(t *testing.T) {
	g := NewGuard(1000, 8)
	if mb, ch, why := g.Observe(1000); mb != 8 || ch || why != "" {
		t.Errorf("at budget: %d %v %q", mb, ch, why)
	}
	for _, want := range []int{4, 2, 1} {
		mb, ch, why := g.Observe(1001)
		if mb != want || !ch || !strings.Contains(why, "above the budget") || g.MicroBatch() != want {
			t.Errorf("halving: got %d %v %q, want %d", mb, ch, why, want)
		}
	}
	if mb, ch, why := g.Observe(5000); mb != 1 || ch || !strings.Contains(why, "cannot back off") {
		t.Errorf("at mb 1: %d %v %q", mb, ch, why)
	}
	if mb, _, _ := NewGuard(10, 5).Observe(11); mb != 2 {
		t.Errorf("5 halves to %d, want 2", mb)
	}
}

func TestFromModel(t *testing.T) {
	lc := lora(8, "q_proj")
	o := FromModel(model.Options{Method: model.MethodLoRA, LoRA: lc, Recompute: true})
	if o.Method != LoRA || o.LoRA.Rank != 8 || !o.Recompute {
		t.Errorf("%+v", o)
	}
	if FromModel(model.Options{Method: model.MethodFull}).Method != Full {
		t.Error("full")
	}
}
