package ring

import "fmt"

// This file is the ring's pure core: which elements form which chunk and
// segment, and which chunk each rank sends and receives at each step. It does
// no I/O, so it is tested exhaustively without sockets (schedule_test.go).

// Range is the half-open span of elements [Off, Off+Len) of a buffer.
type Range struct{ Off, Len int }

// End is Off+Len.
func (r Range) End() int { return r.Off + r.Len }

// Chunks splits n elements into size contiguous, near-equal chunks in order:
// the first n%size chunks have one element more than the others. When
// n < size some chunks are empty (Len 0); n == 0 gives size empty chunks.
// It panics on size < 1 or n < 0, which are programming errors.
func Chunks(n, size int) []Range {
	if size < 1 || n < 0 {
		panic(fmt.Sprintf("ring.Chunks(%d, %d): need n >= 0 and size >= 1", n, size))
	}
	q, r := n/size, n%size
	out := make([]Range, size)
	off := 0
	for i := range out {
		l := q
		if i < r {
			l++
		}
		out[i] = Range{Off: off, Len: l}
		off += l
	}
	return out
}

// NumSegments is how many segments of at most segElems elements a chunk of n
// elements is sent as. An empty chunk is still sent as one empty segment, so
// every step of every operation exchanges at least one frame: a rank whose
// buffer length differs from its peers' is detected (frame headers carry the
// total length) instead of leaving the others waiting.
func NumSegments(n, segElems int) int {
	if segElems < 1 {
		panic(fmt.Sprintf("ring.NumSegments(%d, %d): segElems must be >= 1", n, segElems))
	}
	if n <= 0 {
		return 1
	}
	return (n + segElems - 1) / segElems
}

// Segment is the j-th segment (0 <= j < NumSegments(r.Len, segElems)) of r.
func Segment(r Range, segElems, j int) Range {
	off := j * segElems
	l := min(segElems, r.Len-off)
	if l < 0 {
		l = 0
	}
	return Range{Off: r.Off + off, Len: l}
}

// Phase is one half of a ring all-reduce.
type Phase int

const (
	// ReduceScatter steps add the received chunk into the local one. After
	// the size-1 reduce-scatter steps, rank r holds the full reduction of
	// chunk r (and only of that chunk).
	ReduceScatter Phase = iota
	// AllGather steps overwrite the local chunk with the received one. After
	// the size-1 all-gather steps every rank holds every reduced chunk.
	AllGather
)

func (p Phase) String() string {
	switch p {
	case ReduceScatter:
		return "reduce-scatter"
	case AllGather:
		return "all-gather"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Step is what one rank does at one step of a ring all-reduce: send chunk
// Send to its right neighbour (rank+1) and receive chunk Recv from its left
// neighbour (rank-1), at the same time.
type Step struct {
	Phase      Phase
	Send, Recv int
}

// Steps is the number of steps of a ring all-reduce among size ranks:
// size-1 reduce-scatter steps then size-1 all-gather steps. Each step sends
// one chunk of about n/size elements, so each rank sends 2(size-1)/size of the
// buffer in all, whatever size is: the ring's bandwidth optimality.
func Steps(size int) int { return 2 * (size - 1) }

// Schedule is the chunk rank sends and the chunk it receives at step
// (0 <= step < Steps(size)):
//
//	reduce-scatter, s = step:           send (rank-s-1) mod size, recv (rank-s-2) mod size
//	all-gather,     s = step-(size-1):  send (rank-s)   mod size, recv (rank-s-1) mod size
//
// Three properties make the ring work, and the pipelining in ring.go relies
// on the third:
//   - what rank r sends at a step is what rank r+1 receives at that step;
//   - after reduce-scatter, rank r owns the full sum of chunk r, which is the
//     chunk it sends first in all-gather;
//   - the chunk a rank receives at step s is the chunk it sends at step s+1
//     (for every s < Steps-1, across the phase boundary too), so each received
//     segment can be forwarded as soon as it is reduced or stored.
func Schedule(rank, size, step int) Step {
	if size < 1 || rank < 0 || rank >= size || step < 0 || step >= Steps(size) {
		panic(fmt.Sprintf("ring.Schedule(rank %d, size %d, step %d): out of range", rank, size, step))
	}
	if step < size-1 {
		return Step{Phase: ReduceScatter, Send: mod(rank-step-1, size), Recv: mod(rank-step-2, size)}
	}
	s := step - (size - 1)
	return Step{Phase: AllGather, Send: mod(rank-s, size), Recv: mod(rank-s-1, size)}
}

// BroadcastRole says what rank does in a pipelined broadcast from root along
// the ring root -> root+1 -> ... -> root-1: whether it receives the buffer
// from its left neighbour, and whether it forwards it to its right one. The
// root only sends; the rank just before the root only receives.
func BroadcastRole(rank, size, root int) (recv, forward bool) {
	if size <= 1 {
		return false, false
	}
	return rank != root, mod(rank+1, size) != root
}

// Left and Right are rank's neighbours: it receives from Left and sends to
// Right.
func Left(rank, size int) int  { return mod(rank-1, size) }
func Right(rank, size int) int { return mod(rank+1, size) }

func mod(a, n int) int {
	a %= n
	if a < 0 {
		a += n
	}
	return a
}
