package trainer

import (
	"math"
	"testing"
)

func TestScheduleWarmupThenCosine(t *testing.T) {
	s := Schedule{Peak: 2e-4, Warmup: 10, Total: 110}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for step := 1; step <= 10; step++ {
		want := 2e-4 * float64(step) / 10
		if got := s.LR(step); math.Abs(got-want) > 1e-15 {
			t.Fatalf("warmup step %d: lr %g, want %g", step, got, want)
		}
	}
	// The seed's formula over the 100 post-warmup steps.
	for _, c := range []struct {
		step int
		want float64
	}{{10, 2e-4}, {35, 2e-4 * (1 + math.Cos(math.Pi*0.25)) / 2}, {60, 1e-4}, {110, 0}} {
		if got := s.LR(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("step %d: lr %g, want %g", c.step, got, c.want)
		}
	}
	for step := 11; step <= 110; step++ {
		if s.LR(step) > s.LR(step-1) {
			t.Fatalf("lr increases after warmup at step %d", step)
		}
	}
}

func TestScheduleNoWarmup(t *testing.T) {
	s := Schedule{Peak: 1, Total: 4}
	want := []float64{(1 + math.Cos(math.Pi/4)) / 2, 0.5, (1 + math.Cos(3*math.Pi/4)) / 2, 0}
	for i, w := range want {
		if got := s.LR(i + 1); math.Abs(got-w) > 1e-12 {
			t.Errorf("step %d: %g, want %g", i+1, got, w)
		}
	}
}

func TestScheduleInvalid(t *testing.T) {
	for _, s := range []Schedule{{Peak: -1, Total: 10}, {Peak: 1, Total: 0}, {Peak: 1, Warmup: 10, Total: 10}, {Peak: math.NaN(), Total: 3}} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}
