package data

// Label convention (read this before touching the loss):
//
// A Sequence is  Tokens = [BOS] + prompt + response + [EOS]  and Labels is
// aligned with Tokens and ALREADY SHIFTED: Labels[t] is the target of the
// prediction made at position t, i.e. the id of Tokens[t+1] when position
// t+1 is trained on, and IgnoreIndex (-100) otherwise. The last position has
// no next token and is always IgnoreIndex (also after truncation, which
// drops tokens from the end before labelling). So the loss is simply
//
//	sum over t with Labels[t] != -100 of  -log softmax(logits[t])[Labels[t]]
//
// with no further shifting in the model or the kernels.
//
// Trained positions: the response tokens and the EOS after them (so the
// model learns to stop). The BOS and the prompt are not trained on, unless
// EncodeOptions.TrainOnPrompt, in which case every token after BOS is.

import (
	"errors"
	"fmt"
)

// IgnoreIndex marks a position without a target (PyTorch's ignore_index).
const IgnoreIndex int32 = -100

// ErrTooLong: an example does not fit the sequence length.
var ErrTooLong = errors.New("example longer than the sequence length")

// EncodeOptions controls Encode.
type EncodeOptions struct {
	SeqLen        int  // maximum tokens per sequence (BOS and EOS included); > 1
	TrainOnPrompt bool // also train on the prompt tokens (--train-on-prompt)
	// Truncate cuts an example longer than SeqLen to SeqLen tokens (keeping
	// the prompt and the start of the response; the EOS is lost) and counts
	// it, instead of failing. An example whose prompt alone leaves no
	// response token in SeqLen is dropped and counted.
	Truncate bool
}

// Sequence is one tokenised example (see the label convention above).
type Sequence struct {
	Tokens []int32
	Labels []int32 // len(Labels) == len(Tokens)
	ID     string  // Example.ID
}

// Targets counts the positions with a target.
func (s Sequence) Targets() int {
	n := 0
	for _, l := range s.Labels {
		if l != IgnoreIndex {
			n++
		}
	}
	return n
}

// PromptTokens returns [BOS] + the prompt's tokens: the input for generating
// ex's response at evaluation time.
func PromptTokens(ex Example, tok Tokenizer) []int32 {
	return append([]int32{tok.BOS()}, tok.Encode(ex.Prompt())...)
}

// Encode tokenises ex and builds its labels. The prompt and the response are
// tokenised separately, so the boundary between them is exact for any
// tokenizer. truncated reports whether Truncate cut the example. An example
// that does not fit fails with ErrTooLong (or, with Truncate, only when no
// response token would remain).
func Encode(ex Example, tok Tokenizer, opts EncodeOptions) (seq Sequence, truncated bool, err error) {
	if opts.SeqLen < 2 {
		return Sequence{}, false, fmt.Errorf("encode %s: seq-len %d must be >= 2", ex.ID, opts.SeqLen)
	}
	prompt := tok.Encode(ex.Prompt())
	resp := tok.Encode(ex.Response)
	full := 1 + len(prompt) + len(resp) + 1
	n := full
	if n > opts.SeqLen {
		if !opts.Truncate {
			return Sequence{}, false, fmt.Errorf("encode %s (%s): %w: %d tokens (prompt %d, response %d) > seq-len %d; raise --seq-len or pass --truncate",
				ex.ID, ex.Source, ErrTooLong, full, len(prompt), len(resp), opts.SeqLen)
		}
		if 1+len(prompt)+1 > opts.SeqLen { // not even one response token fits
			return Sequence{}, false, fmt.Errorf("encode %s (%s): %w: the prompt alone (%d tokens) leaves no room for the response in seq-len %d",
				ex.ID, ex.Source, ErrTooLong, len(prompt), opts.SeqLen)
		}
		n, truncated = opts.SeqLen, true
	}
	toks := make([]int32, 0, full)
	toks = append(toks, tok.BOS())
	toks = append(toks, prompt...)
	toks = append(toks, resp...)
	toks = append(toks, tok.EOS())
	toks = toks[:n]

	firstTarget := 1 + len(prompt) // first trained token position
	if opts.TrainOnPrompt {
		firstTarget = 1
	}
	labels := make([]int32, n)
	for t := range labels {
		labels[t] = IgnoreIndex
		if t+1 < n && t+1 >= firstTarget {
			labels[t] = toks[t+1]
		}
	}
	return Sequence{Tokens: toks, Labels: labels, ID: ex.ID}, truncated, nil
}

// EncodeStats summarises EncodeAll.
type EncodeStats struct {
	Sequences    int // sequences returned
	Truncated    int // examples cut to SeqLen (Truncate)
	Dropped      int // examples dropped: no response token fits (Truncate)
	Tokens       int // tokens in the returned sequences
	TargetTokens int // positions with a target
	MaxLen       int // longest returned sequence
}

func (s EncodeStats) String() string {
	return fmt.Sprintf("%d sequences, %d tokens (%d targets), longest %d, %d truncated, %d dropped",
		s.Sequences, s.Tokens, s.TargetTokens, s.MaxLen, s.Truncated, s.Dropped)
}

// EncodeAll encodes every example. Without Truncate the first example that
// does not fit is an error naming it; with Truncate such examples are cut or
// dropped and counted. No sequences at all is an error (ErrEmptyDataset).
func EncodeAll(examples []Example, tok Tokenizer, opts EncodeOptions) ([]Sequence, EncodeStats, error) {
	var st EncodeStats
	seqs := make([]Sequence, 0, len(examples))
	for _, ex := range examples {
		s, trunc, err := Encode(ex, tok, opts)
		if err != nil {
			if opts.Truncate && errors.Is(err, ErrTooLong) {
				st.Dropped++
				continue
			}
			return nil, st, err
		}
		if trunc {
			st.Truncated++
		}
		st.Tokens += len(s.Tokens)
		st.TargetTokens += s.Targets()
		st.MaxLen = max(st.MaxLen, len(s.Tokens))
		seqs = append(seqs, s)
	}
	st.Sequences = len(seqs)
	if len(seqs) == 0 {
		return nil, st, fmt.Errorf("encode: %w left (%d examples, %d dropped as too long for seq-len %d)",
			ErrEmptyDataset, len(examples), st.Dropped, opts.SeqLen)
	}
	return seqs, st, nil
}
