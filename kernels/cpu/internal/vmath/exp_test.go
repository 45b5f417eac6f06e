package vmath

import (
	"math"
	"testing"
)

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := -100.0; x <= 100; x += 0.001 {
		got := float64(Exp(float32(x)))
		want := math.Exp(float64(float32(x)))
		if want > math.MaxFloat32 {
			if !math.IsInf(got, 1) {
				t.Fatalf("Exp(%v) = %v, want +Inf", x, got)
			}
			continue
		}
		if want < 1.2e-38 {
			if got > 1.2e-38 {
				t.Fatalf("Exp(%v) = %v, want ~0", x, got)
			}
			continue
		}
		if rel := math.Abs(got-want) / want; rel > worst {
			worst = rel
		}
	}
	if worst > 3e-7 {
		t.Errorf("expf worst relative error %.3g, want <= 3e-7 (about 2 ulp)", worst)
	}
	if !math.IsNaN(float64(Exp(float32(math.NaN())))) {
		t.Error("Exp(NaN) is not NaN")
	}
	if Exp(float32(math.Inf(-1))) != 0 || !math.IsInf(float64(Exp(float32(math.Inf(1)))), 1) {
		t.Error("Exp(±Inf) wrong")
	}
	if Exp(0) != 1 {
		t.Errorf("Exp(0) = %v", Exp(0))
	}
}

var sinkF32 float32

func benchExpInput() ([]float32, []float32) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) * 0.005
	}
	return x, make([]float32, len(x))
}

func BenchmarkExp(b *testing.B) {
	x, y := benchExpInput()
	for b.Loop() {
		for i, v := range x {
			y[i] = Exp(v)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/exp")
}

func BenchmarkMathExp(b *testing.B) {
	x, y := benchExpInput()
	for b.Loop() {
		for i, v := range x {
			y[i] = float32(math.Exp(float64(v)))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/exp")
}

func BenchmarkExpShiftSum(b *testing.B) {
	x, y := benchExpInput()
	for b.Loop() {
		ExpShiftSum(y, x, 0.5)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/exp")
}

// TestExpShiftSumMatchesScalar checks the vector path (when the CPU has it)
// against the scalar one element by element, for every tail length, with
// aliasing, and on special values. They may differ by 1 ulp: the assembly
// fuses multiply-adds, Go (GOAMD64=v1) does not.
func TestExpShiftSumMatchesScalar(t *testing.T) {
	specials := []float32{0, -1e-8, -0.5, -87.3, -87.4, -88, -103, -1e30, float32(math.Inf(-1)), 5, 88, 88.5, 1e30, float32(math.Inf(1))}
	for n := 0; n <= 70; n++ {
		src := make([]float32, n)
		for i := range src {
			src[i] = -float32((i*7919)%1000)*0.09 + 3
			if i%5 == 0 {
				src[i] = specials[(i/5)%len(specials)]
			}
		}
		const shift = 2.5
		want := make([]float32, n)
		wantSum := expCoreGo(want, src, 1, shift)
		got := make([]float32, n)
		gotSum := ExpShiftSum(got, src, shift)
		for i := range want {
			if !within1ulp(got[i], want[i]) {
				t.Fatalf("n=%d: element %d (x=%v): got %v, scalar %v", n, i, src[i]-shift, got[i], want[i])
			}
		}
		if math.Abs(gotSum-wantSum) > 1e-7*math.Abs(wantSum) {
			t.Fatalf("n=%d: sum %v, scalar %v", n, gotSum, wantSum)
		}
		alias := append([]float32(nil), src...)
		ExpShiftSum(alias, alias, shift)
		for i := range alias {
			if math.Float32bits(alias[i]) != math.Float32bits(got[i]) {
				t.Fatalf("n=%d aliased: element %d: got %v, want %v", n, i, alias[i], want[i])
			}
		}
	}
	nan := make([]float32, 16)
	nan[3] = float32(math.NaN())
	out := make([]float32, 16)
	if s := ExpShiftSum(out, nan, 0); !math.IsNaN(s) || !math.IsNaN(float64(out[3])) || out[4] != 1 {
		t.Errorf("NaN input: sum %v, out[3] %v, out[4] %v; want NaN, NaN, 1", s, out[3], out[4])
	}
	// The accuracy of the shared algorithm against float64.
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) * 0.02
	}
	y := make([]float32, len(x))
	ExpShiftSum(y, x, 0)
	for i := range x {
		want := math.Exp(float64(x[i]))
		if want < 1.2e-38 {
			continue
		}
		if rel := math.Abs(float64(y[i])-want) / want; rel > 3e-7 {
			t.Fatalf("e^%v = %v, want %v (rel err %.3g)", x[i], y[i], want, rel)
		}
	}
}

func within1ulp(a, b float32) bool {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) {
		return math.IsNaN(float64(a)) && math.IsNaN(float64(b))
	}
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	return d >= -1 && d <= 1
}

func TestExpNeg(t *testing.T) {
	for n := 0; n <= 40; n++ {
		src := make([]float32, n)
		for i := range src {
			src[i] = float32((i*37)%41-20) * 0.7
		}
		got := make([]float32, n)
		ExpNeg(got, src)
		for i, v := range src {
			want := math.Exp(-float64(v))
			if rel := math.Abs(float64(got[i])-want) / want; rel > 3e-7 {
				t.Fatalf("n=%d: e^-%v = %v, want %v", n, v, got[i], want)
			}
		}
	}
}

func TestMax(t *testing.T) {
	if m := Max(nil); !math.IsInf(float64(m), -1) {
		t.Errorf("Max(nil) = %v, want -Inf", m)
	}
	for n := 1; n <= 50; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32((i*7919)%101) - 200
		}
		for at := 0; at < n; at++ {
			y := append([]float32(nil), x...)
			y[at] = 5
			if m := Max(y); m != 5 {
				t.Fatalf("n=%d, max at %d: Max = %v, want 5", n, at, m)
			}
			y[at] = float32(math.NaN())
			if m := Max(y); !math.IsNaN(float64(m)) {
				t.Fatalf("n=%d, NaN at %d: Max = %v, want NaN", n, at, m)
			}
		}
	}
}

func BenchmarkMax(b *testing.B) {
	x, _ := benchExpInput()
	for b.Loop() {
		Max(x)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
}
