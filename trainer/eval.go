package trainer

import (
	"context"
	"fmt"
	"slices"

	"github.com/peertune/peertune/kernels"

	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/data/telecom"
	"github.com/peertune/peertune/trainer/model"
)

// TaskScore is exact-match and format accuracy on held-out examples.
type TaskScore struct {
	N              int
	ExactMatch     float64 // fraction of answers equal to the reference
	FormatAccuracy float64 // fraction of answers in the task's format
	Report         telecom.Report
}

// evalBatch bounds how many prompts are decoded together: larger batches make
// bigger GEMMs, but every row pays for the longest prompt.
const evalBatch = 64

// ScoreExamples greedily decodes the response of each example and scores it
// with the built-in telecom tasks' checker.
//
// Decoding gives exactly the scores that full greedy decoding would, with far
// fewer forward passes:
//
//   - First, one teacher-forced forward pass over prompt + reference + EOS per
//     example. Greedy decoding reproduces the reference exactly iff the argmax
//     at every response position is the reference's next token; otherwise it
//     reproduces the reference up to the first position where the argmax
//     differs, and then emits that argmax.
//   - Then real decoding only for the examples that failed that check, and
//     only from that first differing token on (a trained model that gets the
//     format right typically errs late, in the numbers).
//   - A row stops as soon as its score is decided (telecom.Settled): an
//     untrained model's prose is seen to be neither the answer nor in the
//     answer format after a token or two.
//
// Cancelling ctx stops it between batches (SIGTERM must not wait for the
// whole scoring).
func ScoreExamples(ctx context.Context, m *model.Model, tok data.Tokenizer, examples []data.Example, maxLen int) (TaskScore, error) {
	var rep telecom.Report
	var misses []data.Example
	var missPrefix [][]int32 // per miss: what greedy decoding emits up to and including its first difference
	for i := 0; i < len(examples); i += evalBatch {
		if err := ctx.Err(); err != nil {
			return TaskScore{}, fmt.Errorf("score held-out examples: %w", err)
		}
		chunk := examples[i:min(i+evalBatch, len(examples))]
		prefixes, err := greedyPrefix(m, tok, chunk, maxLen)
		if err != nil {
			return TaskScore{}, fmt.Errorf("score held-out examples: %w", err)
		}
		for j, ex := range chunk {
			if prefixes[j] == nil {
				rep.Add(ex, ex.Response)
			} else {
				misses = append(misses, ex)
				missPrefix = append(missPrefix, prefixes[j])
			}
		}
	}
	newline := tok.Encode("\n")
	for i := 0; i < len(misses); i += evalBatch {
		if err := ctx.Err(); err != nil {
			return TaskScore{}, fmt.Errorf("score held-out examples: %w", err)
		}
		chunk := misses[i:min(i+evalBatch, len(misses))]
		maxNew := 8
		for _, ex := range chunk {
			// Room for the reference answer and a little more, so that a wrong
			// but longer answer is still seen whole.
			maxNew = max(maxNew, len(tok.Encode(ex.Response))+8)
		}
		outs := make([][]int32, len(chunk))
		var rows []int // rows still to decode
		var prompts [][]int32
		for j, ex := range chunk {
			pre := missPrefix[i+j]
			last := pre[len(pre)-1]
			switch {
			case last == tok.EOS():
				outs[j] = pre[:len(pre)-1]
			case len(pre) >= maxNew || slices.Contains(newline, last) || telecom.Settled(ex, tok.Decode(pre)):
				outs[j] = pre[:min(len(pre), maxNew)]
			default:
				outs[j] = pre
				rows = append(rows, j)
				prompts = append(prompts, append(data.PromptTokens(ex, tok), pre...))
			}
		}
		if len(rows) > 0 {
			// Only the first line is scored (telecom.Answer), so a newline ends
			// a row, and so does a settled score.
			gen, err := Generate(m, prompts, GenerateOptions{MaxNew: maxNew, EOS: tok.EOS(), PAD: tok.PAD(), MaxLen: maxLen,
				StopAt: newline, Done: func(r int, out []int32) bool {
					j := rows[r]
					all := append(slices.Clip(outs[j]), out...)
					return len(all) >= maxNew || telecom.Settled(chunk[j], tok.Decode(all))
				}})
			if err != nil {
				return TaskScore{}, fmt.Errorf("score held-out examples: %w", err)
			}
			for r, j := range rows {
				outs[j] = append(outs[j], gen[r]...)
				outs[j] = outs[j][:min(len(outs[j]), maxNew)]
			}
		}
		for j, ex := range chunk {
			rep.Add(ex, tok.Decode(outs[j]))
		}
	}
	s := TaskScore{N: rep.N, Report: rep}
	if rep.N > 0 {
		s.ExactMatch = float64(rep.Exact) / float64(rep.N)
		s.FormatAccuracy = float64(rep.FormatOK) / float64(rep.N)
	}
	return s, nil
}

// greedyPrefix returns, per example, nil when greedy decoding from its prompt
// yields exactly its reference response followed by EOS, and otherwise the
// tokens greedy decoding emits up to and including the first one that differs
// from the reference (EOS included, when that is the differing token).
func greedyPrefix(m *model.Model, tok data.Tokenizer, examples []data.Example, maxLen int) ([][]int32, error) {
	seqs := make([]data.Sequence, len(examples))
	for i, ex := range examples {
		s, _, err := data.Encode(ex, tok, data.EncodeOptions{SeqLen: maxLen})
		if err != nil {
			return nil, err
		}
		seqs[i] = s
	}
	b := makeBatch(seqs, tok.PAD())
	logits, err := m.Logits(b)
	if err != nil {
		return nil, err
	}
	V := m.Cfg.Vocab
	out := make([][]int32, len(examples))
	for r := range seqs {
		var matched []int32
		for t := 0; t < b.Seq; t++ {
			i := r*b.Seq + t
			want := b.Targets[i]
			if want == kernels.IgnoreIndex {
				continue
			}
			row := logits[i*V : (i+1)*V]
			best := 0
			for v := range row {
				if row[v] > row[best] {
					best = v
				}
			}
			if int32(best) != want {
				out[r] = append(matched, int32(best))
				break
			}
			matched = append(matched, want)
		}
	}
	return out, nil
}
