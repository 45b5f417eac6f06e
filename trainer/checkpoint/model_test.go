package checkpoint_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer/checkpoint"
	"github.com/peertune/peertune/trainer/model"
)

// TestModelRoundTrip is the integration the trainer does: a real LoRA model's
// buffers and m.SaveAdapter go in; the checkpoint directory is a PEFT adapter
// directory the model loads back; Load restores Params, M and V bitwise into
// a fresh model, and the stored layout matches the model's.
func TestModelRoundTrip(t *testing.T) {
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.Config{Hidden: 32, Intermediate: 48, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 37,
		RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 64}
	opts := model.Options{Method: model.MethodLoRA, LoRA: model.LoRAConfig{Rank: 4, Alpha: 8, Targets: model.DefaultLoRATargets()}}
	newModel := func() *model.Model {
		m, err := model.New(be, cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Free)
		return m
	}
	spans := func(m *model.Model) []checkpoint.Span {
		var out []checkpoint.Span
		for _, ten := range m.TrainLayout.Tensors {
			out = append(out, checkpoint.Span{Name: ten.Name, Offset: ten.Offset, Shape: ten.Shape})
		}
		return out
	}
	m := newModel()
	n := m.TrainableParams()
	rng := rand.New(rand.NewPCG(1, 2))
	host := func() []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	ts := checkpoint.Tensors{Params: host(), M: host(), V: host(), Layout: spans(m)}
	if err := be.CopyIn(m.Params, ts.Params); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := checkpoint.Save(dir, checkpoint.State{Step: 7, BestVal: math.Inf(1)}, ts,
		func(d string) error { return m.SaveAdapter(d, "builtin") }, checkpoint.Options{Keep: 2})
	if err != nil {
		t.Fatal(err)
	}

	// The checkpoint is a PEFT adapter directory.
	lc, err := model.ReadPEFTConfig(filepath.Join(p, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := model.New(be, cfg, model.Options{Method: model.MethodLoRA, LoRA: lc})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Free()
	if err := m2.LoadAdapter(filepath.Join(p, "adapter_model.safetensors")); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n)
	if err := be.CopyOut(got, m2.Params); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(ts.Params[i]) {
			t.Fatalf("adapter element %d: %v, want %v", i, got[i], ts.Params[i])
		}
	}

	// Resume into a fresh model.
	path, st, err := checkpoint.Latest(dir, nil)
	if err != nil || path != p || st.Step != 7 {
		t.Fatalf("Latest = %s, %d, %v", path, st.Step, err)
	}
	_, lt, err := checkpoint.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m3 := newModel()
	if err := lt.CheckLayout(spans(m3)); err != nil {
		t.Fatal(err)
	}
	if len(lt.Params) != m3.TrainableParams() {
		t.Fatalf("checkpoint has %d parameters, the model %d", len(lt.Params), m3.TrainableParams())
	}
	for _, c := range []struct {
		name string
		src  []float32
		want []float32
	}{{"params", lt.Params, ts.Params}, {"m", lt.M, ts.M}, {"v", lt.V, ts.V}} {
		for i := range c.src {
			if math.Float32bits(c.src[i]) != math.Float32bits(c.want[i]) {
				t.Fatalf("%s element %d differs", c.name, i)
			}
		}
	}
	if err := be.CopyIn(m3.Params, lt.Params); err != nil {
		t.Fatal(err)
	}
	if err := be.CopyIn(m3.M, lt.M); err != nil {
		t.Fatal(err)
	}
	if err := be.CopyIn(m3.V, lt.V); err != nil {
		t.Fatal(err)
	}
	// A model with another LoRA rank does not match the stored layout.
	o4 := opts
	o4.LoRA.Rank = 8
	m4, err := model.New(be, cfg, o4)
	if err != nil {
		t.Fatal(err)
	}
	defer m4.Free()
	if err := lt.CheckLayout(spans(m4)); err == nil {
		t.Fatal("CheckLayout accepted a rank-8 model for a rank-4 checkpoint")
	}
}
