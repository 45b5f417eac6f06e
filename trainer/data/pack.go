package data

import "fmt"

// Row is one fixed-length training row: what a micro-batch stacks.
// Tokens, Labels and Positions have the same length (the sequence length).
//
// Positions are the RoPE positions: they restart at 0 at the start of every
// document packed into the row, so a position of 0 also marks a document
// boundary (a kernel wanting document-masked attention can derive it).
// Padding (PAD tokens, IgnoreIndex labels) continues the positions of the
// row's last document and carries no target.
type Row struct {
	Tokens    []int32
	Labels    []int32
	Positions []int32
	IDs       []string // Sequence.IDs of the documents in the row, in order
}

// PadRows makes one row per sequence, padded to seqLen: positions 0..seqLen-1.
func PadRows(seqs []Sequence, seqLen int, pad int32) ([]Row, error) {
	rows := make([]Row, 0, len(seqs))
	for _, s := range seqs {
		if len(s.Tokens) > seqLen {
			return nil, fmt.Errorf("pad %s: %d tokens > seq-len %d", s.ID, len(s.Tokens), seqLen)
		}
		r := newRow(seqLen)
		r.add(s)
		r.pad(seqLen, pad)
		rows = append(rows, r)
	}
	return rows, nil
}

// Pack concatenates sequences, in order, into rows of seqLen tokens (first
// fit in order: a sequence that does not fit in the current row starts the
// next one; sequences are never split), padding each row's tail. Packing is
// deterministic and done once, before the global sample order: the rows are
// the samples, so the row set does not depend on the world size.
//
// Attention is causal over the whole row: packed documents can attend to
// earlier documents in the row unless the kernel masks at position 0
// boundaries; the labels never cross a boundary (each document's last
// position is IgnoreIndex).
func Pack(seqs []Sequence, seqLen int, pad int32) ([]Row, error) {
	var rows []Row
	r := newRow(seqLen)
	for _, s := range seqs {
		if len(s.Tokens) > seqLen {
			return nil, fmt.Errorf("pack %s: %d tokens > seq-len %d", s.ID, len(s.Tokens), seqLen)
		}
		if len(r.Tokens)+len(s.Tokens) > seqLen {
			r.pad(seqLen, pad)
			rows = append(rows, r)
			r = newRow(seqLen)
		}
		r.add(s)
	}
	if len(r.IDs) > 0 {
		r.pad(seqLen, pad)
		rows = append(rows, r)
	}
	return rows, nil
}

func newRow(seqLen int) Row {
	return Row{
		Tokens:    make([]int32, 0, seqLen),
		Labels:    make([]int32, 0, seqLen),
		Positions: make([]int32, 0, seqLen),
	}
}

func (r *Row) add(s Sequence) {
	r.Tokens = append(r.Tokens, s.Tokens...)
	r.Labels = append(r.Labels, s.Labels...)
	for p := range s.Tokens {
		r.Positions = append(r.Positions, int32(p))
	}
	r.IDs = append(r.IDs, s.ID)
}

func (r *Row) pad(seqLen int, pad int32) {
	next := int32(0)
	if n := len(r.Positions); n > 0 {
		next = r.Positions[n-1] + 1
	}
	for len(r.Tokens) < seqLen {
		r.Tokens = append(r.Tokens, pad)
		r.Labels = append(r.Labels, IgnoreIndex)
		r.Positions = append(r.Positions, next)
		next++
	}
}
