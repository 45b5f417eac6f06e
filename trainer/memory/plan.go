package memory

import (
	"fmt"
	"sort"
	"strings"

	"github.com/peertune/peertune/trainer/model"
)

// Choice is what Plan picked for one rank.
type Choice struct {
	MicroBatch int
	Recompute  bool
	Estimate   Breakdown // the estimate of the choice
}

// BudgetError says that no micro-batch fits: even micro-batch 1 with
// recompute needs more than the budget. Estimate is that smallest setting's
// breakdown, so the message can say which terms are to blame.
type BudgetError struct {
	Budget   int64
	Estimate Breakdown
	Options  Options
}

func (e *BudgetError) Error() string {
	b := e.Estimate
	var sb strings.Builder
	fmt.Fprintf(&sb, "memory budget %s cannot hold even micro-batch 1 with recompute: %s training on %s needs %s",
		FormatBytes(e.Budget), e.Options.Method, e.Options.Device, FormatBytes(b.Total))
	if b.Peak() == "load" {
		fmt.Fprintf(&sb, " while loading the base weights")
	}
	terms := append([]Term(nil), b.Terms...)
	sort.SliceStable(terms, func(i, j int) bool { return terms[i].Bytes > terms[j].Bytes })
	sb.WriteString(" (")
	n := 0
	for _, t := range terms {
		if (b.Peak() == "load" && !t.InLoad) || (b.Peak() == "step" && !t.InStep) {
			continue
		}
		if n > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s %s", t.Name, FormatBytes(t.Bytes))
		if n++; n == 5 {
			break
		}
	}
	sb.WriteString("); raise --mem-budget, use a smaller model, --method qlora/lora, or a shorter --seq-len")
	return sb.String()
}

// Plan picks the largest micro-batch, at most perRank (this rank's share of
// the global batch), whose estimate fits budget bytes, first without
// recompute and only if nothing fits with it. opts.MicroBatch is ignored;
// opts.Recompute true forces recompute. Gradient accumulation over the
// rank's share keeps the global batch (and so the updates) the same
// whatever micro-batch each node picks. When even micro-batch 1 with
// recompute does not fit, the error is a *BudgetError.
func Plan(cfg model.Config, opts Options, budget int64, perRank int) (Choice, error) {
	if perRank < 1 {
		return Choice{}, fmt.Errorf("plan: this rank's share of the global batch is %d sequences; it must be at least 1", perRank)
	}
	if budget <= 0 {
		return Choice{}, fmt.Errorf("plan: memory budget %d bytes: must be positive", budget)
	}
	modes := []bool{false, true}
	if opts.Recompute {
		modes = []bool{true}
	}
	var last Breakdown
	for _, rc := range modes {
		o := opts
		o.Recompute = rc
		// The estimate grows with the micro-batch: binary search for the
		// largest that fits.
		fits := func(mb int) (Breakdown, bool, error) {
			o.MicroBatch = mb
			b, err := Estimate(cfg, o)
			return b, err == nil && b.Total <= budget, err
		}
		b, ok, err := fits(1)
		if err != nil {
			return Choice{}, err
		}
		last = b
		if !ok {
			continue
		}
		lo, hi := 1, perRank // lo fits
		best := b
		for lo < hi {
			mid := lo + (hi-lo+1)/2
			bm, ok, err := fits(mid)
			if err != nil {
				return Choice{}, err
			}
			if ok {
				lo, best = mid, bm
			} else {
				hi = mid - 1
			}
		}
		return Choice{MicroBatch: lo, Recompute: rc, Estimate: best}, nil
	}
	o := opts
	o.Recompute, o.MicroBatch = true, 1
	return Choice{}, &BudgetError{Budget: budget, Estimate: last, Options: o}
}

// Guard watches the memory a rank actually uses and halves the micro-batch
// when a step went over budget. It is not safe for concurrent use (one
// trainer loop calls it).
type Guard struct {
	budget     int64
	microBatch int
}

// NewGuard starts a guard at the planned micro-batch.
func NewGuard(budget int64, microBatch int) *Guard {
	return &Guard{budget: budget, microBatch: max(microBatch, 1)}
}

// MicroBatch is the micro-batch the next step should run.
func (g *Guard) MicroBatch() int { return g.microBatch }

// Observe takes the memory used after a step (RSS on the CPU, NVML's
// per-process figure on a GPU). Above budget it halves the micro-batch
// (never below 1) and says why; changed is false when nothing changes. At
// micro-batch 1 there is nothing left to give up: changed is false and
// reason says so (the caller decides whether to go on).
func (g *Guard) Observe(used int64) (newMicroBatch int, changed bool, reason string) {
	if used <= g.budget {
		return g.microBatch, false, ""
	}
	if g.microBatch == 1 {
		return 1, false, fmt.Sprintf("memory in use %s is above the budget %s at micro-batch 1: cannot back off further",
			FormatBytes(used), FormatBytes(g.budget))
	}
	old := g.microBatch
	g.microBatch = max(old/2, 1)
	return g.microBatch, true, fmt.Sprintf("memory in use %s is above the budget %s: the next step runs micro-batch %d instead of %d",
		FormatBytes(used), FormatBytes(g.budget), g.microBatch, old)
}

// FromModel fills Method, LoRA and Recompute from the options a model is
// built with (trainer.Config.ModelOptions); the caller sets SeqLen, Device,
// Threads and, for a GPU, the dtypes the backend really uses.
func FromModel(o model.Options) Options {
	m := LoRA
	if o.Method == model.MethodFull {
		m = Full
	}
	return Options{Method: m, LoRA: o.LoRA, Recompute: o.Recompute}
}
