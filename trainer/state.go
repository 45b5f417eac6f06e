package trainer

import (
	"context"
	"fmt"
	"math"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
)

// Scalars cross the wire as float32 words carrying 16 bits each (integers
// below 2^16 are exact in float32), so 64-bit values arrive bit for bit.
func putU64(w []float32, v uint64) {
	for i := 0; i < 4; i++ {
		w[i] = float32((v >> (16 * i)) & 0xffff)
	}
}

func getU64(w []float32) uint64 {
	var v uint64
	for i := 0; i < 4; i++ {
		v |= uint64(w[i]) << (16 * i)
	}
	return v
}

// stateWords is the length of the encoded RunState.
const stateWords = 4 * 11

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func (st RunState) encode(hasBest bool) []float32 {
	w := make([]float32, stateWords)
	vals := []uint64{
		uint64(st.Step), math.Float64bits(st.FinalLoss), math.Float64bits(st.BestVal), uint64(st.BestStep),
		uint64(st.SinceBest), b2u(st.Stopped), b2u(st.Baseline.Done), math.Float64bits(st.Baseline.ValLoss),
		math.Float64bits(st.Baseline.ExactMatch),
		math.Float64bits(st.Baseline.FormatAcc), uint64(st.Baseline.Scored)<<1 | b2u(hasBest),
	}
	for i, v := range vals {
		putU64(w[4*i:], v)
	}
	return w
}

func decodeState(w []float32) (st RunState, hasBest bool) {
	v := func(i int) uint64 { return getU64(w[4*i:]) }
	st.Step = int(v(0))
	st.FinalLoss = math.Float64frombits(v(1))
	st.BestVal = math.Float64frombits(v(2))
	st.BestStep = int(v(3))
	st.SinceBest = int(v(4))
	st.Stopped = v(5) == 1
	st.Baseline.Done = v(6) == 1
	st.Baseline.ValLoss = math.Float64frombits(v(7))
	st.Baseline.ExactMatch = math.Float64frombits(v(8))
	st.Baseline.FormatAcc = math.Float64frombits(v(9))
	st.Baseline.Scored = int(v(10) >> 1)
	hasBest = v(10)&1 == 1
	return st, hasBest
}

// SyncState makes every rank of a new world hold the same trainable state:
// the ranks tell each other how far they got, and the rank with the most
// completed steps (the lowest such rank on a tie) broadcasts its parameters,
// AdamW moments, best snapshot and progress. A node that just joined thus
// receives everything from a peer, and survivors of a failed step agree on
// the last step any of them completed (DESIGN invariants 3 and 4). It
// returns the root's rank.
func (t *Trainer) SyncState(ctx context.Context) (root int, err error) {
	be := t.m.Backend()
	size := t.comm.Size()
	if size == 1 {
		return 0, nil
	}
	steps, err := be.Alloc(4*size, kernels.F32)
	if err != nil {
		return 0, err
	}
	defer be.Free(steps)
	mine := make([]float32, 4*size)
	putU64(mine[4*t.comm.Rank():], uint64(t.state.Step)+1) // +1: 0 means "no word from this rank"
	if err := be.CopyIn(steps, mine); err != nil {
		return 0, err
	}
	if err := t.comm.AllReduce(ctx, steps, collective.Sum); err != nil {
		return 0, fmt.Errorf("sync state: exchange steps: %w", err)
	}
	all := make([]float32, 4*size)
	if err := be.CopyOut(all, steps); err != nil {
		return 0, err
	}
	best := uint64(0)
	for r := 0; r < size; r++ {
		if s := getU64(all[4*r:]); s > best {
			best, root = s, r
		}
	}
	scal, err := be.Alloc(stateWords, kernels.F32)
	if err != nil {
		return 0, err
	}
	defer be.Free(scal)
	if err := be.CopyIn(scal, t.state.encode(t.best != nil)); err != nil {
		return 0, err
	}
	if err := t.comm.Broadcast(ctx, scal, root); err != nil {
		return 0, fmt.Errorf("sync state: broadcast progress: %w", err)
	}
	enc := make([]float32, stateWords)
	if err := be.CopyOut(enc, scal); err != nil {
		return 0, err
	}
	st, hasBest := decodeState(enc)
	for _, b := range []kernels.Buffer{t.m.Params, t.m.M, t.m.V} {
		if err := t.comm.Broadcast(ctx, b, root); err != nil {
			return 0, fmt.Errorf("sync state: broadcast parameters: %w", err)
		}
	}
	var bestHost []float32
	if hasBest {
		tmp, err := be.Alloc(t.m.Params.Len(), kernels.F32)
		if err != nil {
			return 0, err
		}
		defer be.Free(tmp)
		if t.comm.Rank() == root {
			if err := be.CopyIn(tmp, t.best); err != nil {
				return 0, err
			}
		}
		if err := t.comm.Broadcast(ctx, tmp, root); err != nil {
			return 0, fmt.Errorf("sync state: broadcast best parameters: %w", err)
		}
		bestHost = make([]float32, tmp.Len())
		if err := be.CopyOut(bestHost, tmp); err != nil {
			return 0, err
		}
	}
	t.state, t.best = st, bestHost
	return root, nil
}
