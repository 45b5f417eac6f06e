package trainer

import (
	"fmt"

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
// Decoding is done in two passes that give exactly what full greedy decoding
// would: first one teacher-forced forward pass over prompt + reference + EOS
// per example — greedy decoding reproduces the reference exactly iff the
// argmax at every response position is the reference's next token — and then
// real decoding only for the examples that failed that check. A trained model
// gets most answers right, so evaluation after training costs a few forward
// passes instead of one per generated token.
func ScoreExamples(m *model.Model, tok data.Tokenizer, examples []data.Example, maxLen int) (TaskScore, error) {
	var rep telecom.Report
	var misses []data.Example
	for i := 0; i < len(examples); i += evalBatch {
		chunk := examples[i:min(i+evalBatch, len(examples))]
		ok, err := greedyReproduces(m, tok, chunk, maxLen)
		if err != nil {
			return TaskScore{}, fmt.Errorf("score held-out examples: %w", err)
		}
		for j, ex := range chunk {
			if ok[j] {
				rep.Add(ex, ex.Response)
			} else {
				misses = append(misses, ex)
			}
		}
	}
	for i := 0; i < len(misses); i += evalBatch {
		chunk := misses[i:min(i+evalBatch, len(misses))]
		prompts := make([][]int32, len(chunk))
		maxNew := 8
		for j, ex := range chunk {
			prompts[j] = data.PromptTokens(ex, tok)
			// Room for the reference answer and a little more, so that a wrong
			// but longer answer is still seen whole.
			maxNew = max(maxNew, len(tok.Encode(ex.Response))+8)
		}
		// Only the first line is scored (telecom.Answer), so a newline ends a row.
		outs, err := Generate(m, prompts, GenerateOptions{MaxNew: maxNew, EOS: tok.EOS(), PAD: tok.PAD(), MaxLen: maxLen,
			StopAt: tok.Encode("\n")})
		if err != nil {
			return TaskScore{}, fmt.Errorf("score held-out examples: %w", err)
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

// greedyReproduces reports, per example, whether greedy decoding from its
// prompt yields exactly its reference response followed by EOS.
func greedyReproduces(m *model.Model, tok data.Tokenizer, examples []data.Example, maxLen int) ([]bool, error) {
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
	ok := make([]bool, len(examples))
	for r := range seqs {
		ok[r] = true
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
				ok[r] = false
				break
			}
		}
	}
	return ok, nil
}
