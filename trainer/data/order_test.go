package data

import (
	"slices"
	"testing"
)

// Golden values: the order must never change (checkpoints resume on it, and
// every node must compute the same one). Changing them is a breaking change.
func TestPermutationGolden(t *testing.T) {
	got := Permutation(42, 0, 10)
	want := []int{7, 0, 2, 6, 1, 8, 9, 5, 3, 4}
	if !slices.Equal(got, want) {
		t.Fatalf("Permutation(42, 0, 10) = %#v, want %#v", got, want)
	}
	if r := NewRNG(1); r.Uint64() != 0x910a2dec89025cc1 {
		t.Fatal("splitmix64 changed")
	}
}

func TestPermutation(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 100, 1000} {
		p := Permutation(3, 5, n)
		if len(p) != n {
			t.Fatalf("n=%d: len %d", n, len(p))
		}
		s := slices.Clone(p)
		slices.Sort(s)
		for i, v := range s {
			if v != i {
				t.Fatalf("n=%d: not a permutation", n)
			}
		}
		if !slices.Equal(p, Permutation(3, 5, n)) {
			t.Fatalf("n=%d: not deterministic", n)
		}
	}
	if slices.Equal(Permutation(3, 0, 100), Permutation(3, 1, 100)) {
		t.Fatal("epochs 0 and 1 have the same order")
	}
	if slices.Equal(Permutation(3, 0, 100), Permutation(4, 0, 100)) {
		t.Fatal("seeds 3 and 4 have the same order")
	}
	// Roughly uniform: position of element 0 over many seeds.
	var counts [5]int
	for seed := range uint64(5000) {
		counts[slices.Index(Permutation(seed, 0, 5), 0)]++
	}
	for i, c := range counts {
		if c < 850 || c > 1150 {
			t.Fatalf("position %d: %d of 5000, want ~1000", i, c)
		}
	}
}

func TestStepSamplesAcrossEpochs(t *testing.T) {
	const seed, n, B = 9, 10, 4
	p0, p1, p2 := Permutation(seed, 0, n), Permutation(seed, 1, n), Permutation(seed, 2, n)
	stream := append(append(slices.Clone(p0), p1...), p2...)
	epochOf := func(pos int) int { return pos / n }
	o, err := NewOrder(seed, n, B)
	if err != nil {
		t.Fatal(err)
	}
	for step := range 7 { // steps 0..6 cover positions 0..27, straddling epochs at steps 2 and 4
		got := o.Step(step)
		pure, err := StepSamples(seed, step, B, n)
		if err != nil || !slices.Equal(got, pure) {
			t.Fatalf("step %d: cached %v, pure %v (%v)", step, got, pure, err)
		}
		for k, s := range got {
			pos := step*B + k
			if s.Index != stream[pos] || s.Epoch != epochOf(pos) {
				t.Fatalf("step %d sample %d = %+v, want {%d %d}", step, k, s, epochOf(pos), stream[pos])
			}
		}
	}
	if o.Epoch(2) != 0 || o.Epoch(3) != 1 || o.StepEpoch(5) != 2 {
		t.Fatalf("epochs %d %d %g", o.Epoch(2), o.Epoch(3), o.StepEpoch(5))
	}
	// Going back to an earlier step (resume) gives the same samples.
	if !slices.Equal(o.Step(1), must(StepSamples(seed, 1, B, n))) {
		t.Fatal("step 1 changed after visiting later steps")
	}
	for _, bad := range [][3]int{{0, 0, 10}, {0, 4, 0}, {-1, 4, 10}} {
		if _, err := StepSamples(seed, bad[0], bad[1], bad[2]); err == nil {
			t.Fatalf("StepSamples%v accepted", bad)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRankSlicePartitions(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 7, 8} {
		global := make([]int, n)
		for i := range global {
			global[i] = 100 + i
		}
		for size := 1; size <= 5; size++ {
			var joined []int
			minLen, maxLen := n+1, -1
			for rank := range size {
				part := RankSlice(global, rank, size)
				joined = append(joined, part...)
				minLen, maxLen = min(minLen, len(part)), max(maxLen, len(part))
			}
			if !slices.Equal(joined, global) {
				t.Fatalf("n=%d size=%d: parts join to %v", n, size, joined)
			}
			if maxLen-minLen > 1 {
				t.Fatalf("n=%d size=%d: part sizes %d..%d", n, size, minLen, maxLen)
			}
		}
	}
	if lo, hi := RankRange(5, 3, 3); lo != 0 || hi != 0 {
		t.Fatal("rank >= size must get nothing")
	}
	// Appending to a rank's part must not clobber the next rank's.
	g := []int{1, 2, 3, 4}
	p := RankSlice(g, 0, 2)
	_ = append(p, 99)
	if g[2] != 3 {
		t.Fatal("RankSlice part aliases past its end")
	}
}

// World-size invariance: the union of every rank's rows and the target count
// of a step are the same for 1, 3 and 4 ranks.
func TestWorldSizeInvariance(t *testing.T) {
	tok := ByteTokenizer{}
	exs := mkExamples(37)
	seqs, _, err := EncodeAll(exs, tok, EncodeOptions{SeqLen: 96})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Pack(seqs, 96, tok.PAD())
	if err != nil {
		t.Fatal(err)
	}
	o := must(NewOrder(5, len(rows), 6))
	for step := range 10 {
		var ref []string
		refTargets := -1
		for _, size := range []int{1, 3, 4} {
			samples := o.Step(step)
			global := make([]Row, len(samples))
			for i, s := range samples {
				global[i] = rows[s.Index]
			}
			var ids []string
			targets := 0
			for rank := range size {
				norm := TargetTokens(global)
				if refTargets >= 0 && norm != refTargets {
					t.Fatalf("step %d size %d: normaliser %d != %d", step, size, norm, refTargets)
				}
				refTargets = norm
				mine := RankSlice(global, rank, size)
				targets += TargetTokens(mine)
				for _, r := range mine {
					ids = append(ids, r.IDs...)
				}
			}
			if targets != refTargets {
				t.Fatalf("step %d size %d: ranks hold %d targets, normaliser %d", step, size, targets, refTargets)
			}
			if ref == nil {
				ref = ids
			} else if !slices.Equal(ids, ref) {
				t.Fatalf("step %d size %d: samples differ", step, size)
			}
		}
	}
}
