package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// benchBackends returns the backends to benchmark: OpenBLAS when it loads,
// and gonum.
func benchBackends(b *testing.B) map[string]*Backend {
	b.Helper()
	m := map[string]*Backend{}
	if be, err := New(DefaultOptions()); err == nil && be.BLAS() == BLASOpenBLAS {
		m[BLASOpenBLAS] = be
	}
	be, err := New(Options{ForceGonum: true})
	if err != nil {
		b.Fatal(err)
	}
	m[BLASGonum] = be
	return m
}

// BenchmarkSgemm1024 times out = in·wᵀ at 1024³ through Backend.Matmul.
func BenchmarkSgemm1024(b *testing.B) {
	const n = 1024
	for name, be := range benchBackends(b) {
		b.Run(name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			in, w, out := be.Wrap(randSlice(r, n*n, 1)), be.Wrap(randSlice(r, n*n, 1)), be.Wrap(make([]float32, n*n))
			if err := be.Matmul(out, in, w, nil, n, n, n, 1, false); err != nil { // warm-up
				b.Fatal(err)
			}
			for b.Loop() {
				if err := be.Matmul(out, in, w, nil, n, n, n, 1, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// smollm2-135m: one decoder layer at seq 256, micro-batch 1.
const (
	smolHidden, smolInter       = 576, 1536
	smolHeads, smolKV, smolHead = 9, 3, 64
	smolSeq                     = 256
)

// BenchmarkAttentionSmolLM is attention forward + backward of one layer.
func BenchmarkAttentionSmolLM(b *testing.B) {
	const B, S, H, KVH, D = 1, smolSeq, smolHeads, smolKV, smolHead
	for name, be := range benchBackends(b) {
		b.Run(name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(2, 2))
			nq, nkv := B*S*H*D, B*S*KVH*D
			q, k, v := be.Wrap(randSlice(r, nq, 1)), be.Wrap(randSlice(r, nkv, 1)), be.Wrap(randSlice(r, nkv, 1))
			dOut := be.Wrap(randSlice(r, nq, 1))
			out, lse := be.Wrap(make([]float32, nq)), be.Wrap(make([]float32, B*H*S))
			dq, dk, dv := be.Wrap(make([]float32, nq)), be.Wrap(make([]float32, nkv)), be.Wrap(make([]float32, nkv))
			for b.Loop() {
				if err := be.Attention(out, lse, q, k, v, B, S, H, KVH, D); err != nil {
					b.Fatal(err)
				}
				if err := be.AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, B, S, H, KVH, D); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/fwd+bwd")
		})
	}
}

// BenchmarkLayerGEMMsSmolLM is the linear layers of one decoder layer,
// forward and backward, for comparison with BenchmarkAttentionSmolLM: "full"
// computes dIn and dW, "frozen" (LoRA's base weights) only dIn.
func BenchmarkLayerGEMMsSmolLM(b *testing.B) {
	type lin struct{ in, out int }
	layers := []lin{
		{smolHidden, smolHeads * smolHead}, {smolHidden, smolKV * smolHead}, {smolHidden, smolKV * smolHead}, // q k v
		{smolHeads * smolHead, smolHidden},                                        // o
		{smolHidden, smolInter}, {smolHidden, smolInter}, {smolInter, smolHidden}, // gate up down
	}
	for name, be := range benchBackends(b) {
		for _, full := range []bool{true, false} {
			mode := "frozen"
			if full {
				mode = "full"
			}
			b.Run(name+"/"+mode, func(b *testing.B) {
				r := rand.New(rand.NewPCG(3, 3))
				type bufs struct{ x, w, y, dx, dw, dy kernels.Buffer }
				var bs []bufs
				for _, l := range layers {
					bb := bufs{
						x: be.Wrap(randSlice(r, smolSeq*l.in, 1)), w: be.Wrap(randSlice(r, l.out*l.in, 0.05)),
						y: be.Wrap(make([]float32, smolSeq*l.out)), dx: be.Wrap(make([]float32, smolSeq*l.in)),
						dy: be.Wrap(randSlice(r, smolSeq*l.out, 1)),
					}
					if full {
						bb.dw = be.Wrap(make([]float32, l.out*l.in))
					}
					bs = append(bs, bb)
				}
				var flops float64
				for b.Loop() {
					flops = 0
					for i, l := range layers {
						bb := bs[i]
						if err := be.Matmul(bb.y, bb.x, bb.w, nil, smolSeq, l.in, l.out, 1, false); err != nil {
							b.Fatal(err)
						}
						if err := be.MatmulBackward(bb.dx, bb.dw, nil, bb.dy, bb.x, bb.w, smolSeq, l.in, l.out, 1); err != nil {
							b.Fatal(err)
						}
						mul := 2.0
						if full {
							mul = 3
						}
						flops += mul * 2 * smolSeq * float64(l.in*l.out)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/fwd+bwd")
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func TestGemmGFLOPS(t *testing.T) {
	be := newTestBackend(t, DefaultOptions())
	g, err := GemmGFLOPS(be, 64, 48, 32, 2)
	if err != nil || !(g > 0) {
		t.Fatalf("GemmGFLOPS = %v, %v", g, err)
	}
	if _, err := GemmGFLOPS(be, 0, 1, 1, 1); err == nil {
		t.Error("m = 0: want an error")
	}
}
