package model

import (
	"math/rand/v2"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// BenchmarkStep times one training step (forward, backward, AdamW) of the
// smollm2-135m shape at seq 256, micro-batch 1, for LoRA and full FT.
func BenchmarkStep(b *testing.B) {
	cfg := Presets()["smollm2-135m"]
	for _, opts := range []Options{
		{Method: MethodLoRA, LoRA: LoRAConfig{Rank: 16, Alpha: 32, Targets: DefaultLoRATargets()}},
		{Method: MethodFull},
	} {
		b.Run(opts.Method.String(), func(b *testing.B) {
			m, err := New(newCPU(b), cfg, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Free()
			if err := m.InitBase(1); err != nil {
				b.Fatal(err)
			}
			batch := randomBatch(rand.New(rand.NewPCG(1, 2)), cfg, 1, 256)
			step := func(s int) {
				if err := m.ZeroGrads(); err != nil {
					b.Fatal(err)
				}
				if _, _, err := m.ForwardBackward(batch, 1.0/256, uint64(s)); err != nil {
					b.Fatal(err)
				}
				if err := m.Update(kernels.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: s + 1, GradScale: 1}); err != nil {
					b.Fatal(err)
				}
			}
			step(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				step(i + 1)
			}
			b.ReportMetric(float64(256*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
