package data

import (
	"fmt"
	"math/bits"
)

// Global sample order (DESIGN.md invariant 2, world-size invariance).
//
// The samples (rows) of a data set are visited epoch after epoch; epoch e
// visits them in the order Permutation(seed, e, n). The epochs' permutations,
// concatenated, form one endless stream of global sample positions, and
// optimizer step s consumes positions [s*B, (s+1)*B) of it, B being the
// global batch size (so a step may straddle two epochs, and no sample is
// dropped at an epoch's end). Each rank then takes RankSlice of the step's
// samples. Nothing here depends on the world size, so 1 node, 3 nodes, or
// 4 nodes that lost one mid-run consume exactly the same samples at step s.
//
// Why not math/rand: the order must be identical on every node and across
// restarts from a checkpoint, possibly with binaries built by different Go
// versions. math/rand's Shuffle/Intn algorithms and seeding have changed
// between releases (and math/rand/v2's global source is randomly seeded), so
// the order here is defined by this file alone: splitmix64 + Fisher-Yates
// with Lemire's unbiased bounded integers, pinned by a golden test.

// RNG is a small deterministic random number generator (splitmix64). Its
// output is a pure function of the seed, forever. Not safe for concurrent use.
type RNG struct{ state uint64 }

// NewRNG returns an RNG seeded with seed.
func NewRNG(seed uint64) *RNG { return &RNG{state: seed} }

// Uint64 returns the next 64 random bits.
func (r *RNG) Uint64() uint64 {
	r.state += 0x9E3779B97F4A7C15
	return mix64(r.state)
}

// IntN returns a uniform integer in [0, n); n must be > 0.
func (r *RNG) IntN(n int) int {
	if n <= 0 {
		panic(fmt.Sprintf("data.RNG.IntN: n = %d", n)) // programming error, never user input
	}
	// Lemire, "Fast random integer generation in an interval" (2019).
	bound := uint64(n)
	hi, lo := bits.Mul64(r.Uint64(), bound)
	if lo < bound {
		thresh := -bound % bound
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), bound)
		}
	}
	return int(hi)
}

// Float64 returns a uniform float64 in [0, 1).
func (r *RNG) Float64() float64 { return float64(r.Uint64()>>11) / (1 << 53) }

// mix64 is the splitmix64 finaliser: a bijective 64-bit mixer.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// Permutation returns the visiting order of n samples in an epoch: a
// permutation of 0..n-1 that is a pure function of (seed, epoch, n).
func Permutation(seed uint64, epoch, n int) []int {
	if n <= 0 {
		return nil
	}
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r := NewRNG(mix64(seed) ^ mix64(uint64(epoch)^0x6A09E667F3BCC908))
	for i := n - 1; i > 0; i-- { // Fisher-Yates
		j := r.IntN(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// Sample is one global sample of a step: the epoch it is visited in and its
// index into the data set (a row index after packing).
type Sample struct {
	Epoch, Index int
}

// Order yields the samples of every optimizer step (see the package
// comment on global sample order). It caches the permutations of the last
// epochs it used, so consecutive steps cost O(B), plus O(n) once per epoch.
// Not safe for concurrent use.
type Order struct {
	seed        uint64
	n, batch    int
	cacheEpochs [2]int
	cachePerms  [2][]int
}

// NewOrder returns the order of n samples in global batches of globalBatch.
func NewOrder(seed uint64, n, globalBatch int) (*Order, error) {
	if n <= 0 {
		return nil, fmt.Errorf("sample order: %w (n = %d)", ErrEmptyDataset, n)
	}
	if globalBatch <= 0 {
		return nil, fmt.Errorf("sample order: global batch %d must be > 0", globalBatch)
	}
	return &Order{seed: seed, n: n, batch: globalBatch, cacheEpochs: [2]int{-1, -1}}, nil
}

// N is the number of samples per epoch.
func (o *Order) N() int { return o.n }

// GlobalBatch is the number of samples per optimizer step.
func (o *Order) GlobalBatch() int { return o.batch }

// Epoch is the epoch in which step s starts (fractional epochs are
// StepEpoch; this is the integer part).
func (o *Order) Epoch(step int) int { return step * o.batch / o.n }

// StepEpoch is the fractional epoch at the start of step s (for logs and
// schedules): s*B/n.
func (o *Order) StepEpoch(step int) float64 { return float64(step) * float64(o.batch) / float64(o.n) }

// Step returns the B global samples of optimizer step s (s >= 0), in order:
// positions [s*B, (s+1)*B) of the concatenated epoch permutations.
func (o *Order) Step(step int) []Sample {
	out := make([]Sample, o.batch)
	for k := range out {
		pos := step*o.batch + k
		e, i := pos/o.n, pos%o.n
		out[k] = Sample{Epoch: e, Index: o.perm(e)[i]}
	}
	return out
}

func (o *Order) perm(epoch int) []int {
	for c := range o.cacheEpochs {
		if o.cacheEpochs[c] == epoch {
			return o.cachePerms[c]
		}
	}
	// Evict the older (smaller) epoch: steps move forward.
	c := 0
	if o.cacheEpochs[1] < o.cacheEpochs[0] {
		c = 1
	}
	o.cacheEpochs[c], o.cachePerms[c] = epoch, Permutation(o.seed, epoch, o.n)
	return o.cachePerms[c]
}

// StepSamples is NewOrder(seed, n, globalBatch).Step(step) without the
// cache: a pure function, O(n) per call.
func StepSamples(seed uint64, step, globalBatch, n int) ([]Sample, error) {
	o, err := NewOrder(seed, n, globalBatch)
	if err != nil {
		return nil, err
	}
	if step < 0 {
		return nil, fmt.Errorf("sample order: step %d must be >= 0", step)
	}
	return o.Step(step), nil
}

// RankRange returns the half-open range [lo, hi) of n items that rank (of
// size ranks) takes: contiguous, in rank order, the first n%size ranks take
// one item more. When size > n some ranks get an empty range. The ranges of
// ranks 0..size-1 partition [0, n).
func RankRange(n, rank, size int) (lo, hi int) {
	if size <= 0 || rank < 0 || rank >= size || n <= 0 {
		return 0, 0
	}
	q, r := n/size, n%size
	lo = rank*q + min(rank, r)
	hi = lo + q
	if rank < r {
		hi++
	}
	return lo, hi
}

// RankSlice returns rank's part of a step's global slice (see RankRange);
// it aliases s.
func RankSlice[T any](s []T, rank, size int) []T {
	lo, hi := RankRange(len(s), rank, size)
	return s[lo:hi:hi]
}

// TargetTokens counts the positions that carry a target (label !=
// IgnoreIndex) in rows. Every rank computes it over the step's global rows
// (the data is deterministic), and divides its summed token losses by it:
// the loss is then normalised identically whatever the world size.
func TargetTokens(rows []Row) int {
	n := 0
	for _, r := range rows {
		for _, l := range r.Labels {
			if l != IgnoreIndex {
				n++
			}
		}
	}
	return n
}
