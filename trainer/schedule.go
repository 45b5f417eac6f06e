package trainer

import (
	"fmt"
	"math"
)

// Schedule is the learning rate per optimizer step: linear warmup from 0 to
// Peak over Warmup steps, then the seed's cosine decay
//
//	eta(t) = Peak · (1 + cos(pi·t/T)) / 2
//
// over the T = Total − Warmup remaining steps, reaching 0 at the last step.
type Schedule struct {
	Peak   float64
	Warmup int
	Total  int
}

// Validate rejects schedules that cannot be followed.
func (s Schedule) Validate() error {
	if s.Peak <= 0 || math.IsNaN(s.Peak) || math.IsInf(s.Peak, 0) {
		return fmt.Errorf("learning rate %g: must be a positive number", s.Peak)
	}
	if s.Total <= 0 {
		return fmt.Errorf("schedule: %d total steps", s.Total)
	}
	if s.Warmup < 0 || s.Warmup >= s.Total {
		return fmt.Errorf("warmup %d steps: must be in [0, %d) (the total number of steps)", s.Warmup, s.Total)
	}
	return nil
}

// LR is the learning rate of optimizer step `step`, counted from 1.
func (s Schedule) LR(step int) float64 {
	if step <= s.Warmup {
		return s.Peak * float64(step) / float64(s.Warmup)
	}
	t := float64(step - s.Warmup)
	T := float64(s.Total - s.Warmup)
	return s.Peak * (1 + math.Cos(math.Pi*t/T)) / 2
}
