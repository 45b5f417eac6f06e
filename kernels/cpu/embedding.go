package cpu

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// checkTokens verifies every token is in [0, vocab).
func checkTokens(op string, tokens []int32, vocab int) error {
	for i, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return fmt.Errorf("cpu: %s: tokens[%d] = %d outside [0, vocab=%d)", op, i, t, vocab)
		}
	}
	return nil
}

// Embedding gathers out[i, :] = table[tokens[i], :].
func (be *Backend) Embedding(out, table kernels.Buffer, tokens []int32, vocab, dim int) error {
	const op = "Embedding"
	o, err := host(op, "out", out)
	if err != nil {
		return err
	}
	tb, err := host(op, "table", table)
	if err != nil {
		return err
	}
	nOut, err := numel(op, "len(tokens), dim", len(tokens), dim)
	if err != nil {
		return err
	}
	nTab, err := numel(op, "vocab, dim", vocab, dim)
	if err != nil {
		return err
	}
	if err := wantLen(op, "out", len(o), nOut, "len(tokens)*dim"); err != nil {
		return err
	}
	if err := wantLen(op, "table", len(tb), nTab, "vocab*dim"); err != nil {
		return err
	}
	if err := checkTokens(op, tokens, vocab); err != nil {
		return err
	}
	be.parallelFor(len(tokens), dim, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			t := int(tokens[i])
			copy(o[i*dim:(i+1)*dim], tb[t*dim:(t+1)*dim])
		}
	})
	return nil
}

// EmbeddingBackward adds dTable[tokens[i], :] += dOut[i, :] (nil dTable:
// frozen embedding, nothing to do once the arguments check out). A token may
// repeat, so the work is split by columns, not by tokens: each goroutine owns
// a column range of every row, which needs no locks and sums in a fixed
// order (deterministic whatever the thread count).
func (be *Backend) EmbeddingBackward(dTable, dOut kernels.Buffer, tokens []int32, vocab, dim int) error {
	const op = "EmbeddingBackward"
	dt, hasDT, err := optHost(op, "dTable", dTable)
	if err != nil {
		return err
	}
	do, err := host(op, "dOut", dOut)
	if err != nil {
		return err
	}
	nOut, err := numel(op, "len(tokens), dim", len(tokens), dim)
	if err != nil {
		return err
	}
	nTab, err := numel(op, "vocab, dim", vocab, dim)
	if err != nil {
		return err
	}
	if err := wantLen(op, "dOut", len(do), nOut, "len(tokens)*dim"); err != nil {
		return err
	}
	if hasDT {
		if err := wantLen(op, "dTable", len(dt), nTab, "vocab*dim"); err != nil {
			return err
		}
	}
	if err := checkTokens(op, tokens, vocab); err != nil {
		return err
	}
	if !hasDT { // frozen embedding: nothing to add
		return nil
	}
	// Columns are handed out in runs of 16 floats (a cache line) so that
	// goroutines do not write to the same line.
	const run = 16
	runs := (dim + run - 1) / run
	be.parallelFor(runs, len(tokens)*run, func(lo, hi int) {
		c0, c1 := lo*run, min(hi*run, dim)
		for i, t := range tokens {
			dst := dt[int(t)*dim+c0 : int(t)*dim+c1]
			src := do[i*dim+c0 : i*dim+c1]
			for j := range dst {
				dst[j] += src[j]
			}
		}
	})
	return nil
}
