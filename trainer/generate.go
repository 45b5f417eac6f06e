package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/model"
)

// GenerateOptions control decoding.
type GenerateOptions struct {
	MaxNew      int     // new tokens at most per prompt
	Temperature float64 // 0 = greedy
	Seed        uint64  // sampling seed (Temperature > 0)
	EOS         int32   // stop token
	PAD         int32   // filler for rows that are shorter or finished
	// MaxLen caps prompt + generated tokens (the model's positions).
	MaxLen int
	// StopAt ends a row after it generates any of these tokens (kept in the
	// output), e.g. a newline when only the first line matters.
	StopAt []int32
	// Done, when set, ends row i as soon as Done(i, out) is true for the
	// tokens it has generated so far (out; the callee must not keep it), e.g.
	// when what follows cannot change how the row is scored.
	Done func(row int, out []int32) bool
}

// Generate continues every prompt until EOS or MaxNew tokens, all prompts in
// one batch. Rows are right-padded: attention is causal, so a row's next-token
// logits (at its own last position) never see the padding after it. Each new
// token reruns the forward pass over the prefix (no KV cache): simple, and
// cheap enough for the short answers of evaluation.
func Generate(m *model.Model, prompts [][]int32, o GenerateOptions) ([][]int32, error) {
	if o.MaxNew <= 0 {
		return nil, fmt.Errorf("generate: MaxNew %d", o.MaxNew)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 7))
	rows := len(prompts)
	seqs := make([][]int32, rows)
	done := make([]bool, rows)
	out := make([][]int32, rows)
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("generate: prompt %d is empty", i)
		}
		if len(p) >= o.MaxLen {
			return nil, fmt.Errorf("generate: prompt %d has %d tokens, no room to generate within %d positions", i, len(p), o.MaxLen)
		}
		seqs[i] = append([]int32(nil), p...)
	}
	V := m.Cfg.Vocab
	for step := 0; step < o.MaxNew; step++ {
		var active []int
		longest := 0
		for i := range seqs {
			if !done[i] {
				active = append(active, i)
				longest = max(longest, len(seqs[i]))
			}
		}
		if len(active) == 0 {
			break
		}
		b := &model.Batch{Rows: len(active), Seq: longest}
		for _, i := range active {
			for t := 0; t < longest; t++ {
				tok := o.PAD
				if t < len(seqs[i]) {
					tok = seqs[i][t]
				}
				b.Tokens = append(b.Tokens, tok)
				b.Targets = append(b.Targets, kernels.IgnoreIndex)
				b.Positions = append(b.Positions, int32(t))
			}
		}
		logits, err := m.Logits(b)
		if err != nil {
			return nil, fmt.Errorf("generate: %w", err)
		}
		for r, i := range active {
			last := r*longest + len(seqs[i]) - 1
			next := pick(logits[last*V:(last+1)*V], o.Temperature, rng)
			if next == o.EOS {
				done[i] = true
				continue
			}
			seqs[i] = append(seqs[i], next)
			out[i] = append(out[i], next)
			if len(seqs[i]) >= o.MaxLen || slices.Contains(o.StopAt, next) || (o.Done != nil && o.Done(i, out[i])) {
				done[i] = true
			}
		}
	}
	return out, nil
}

// pick is argmax for temperature 0, else a sample from softmax(logits/T).
func pick(logits []float32, temp float64, rng *rand.Rand) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if temp <= 0 {
		return int32(best)
	}
	var sum float64
	p := make([]float64, len(logits))
	for i, v := range logits {
		p[i] = math.Exp((float64(v) - float64(logits[best])) / temp)
		sum += p[i]
	}
	u := rng.Float64() * sum
	for i, v := range p {
		u -= v
		if u <= 0 {
			return int32(i)
		}
	}
	return int32(best)
}
