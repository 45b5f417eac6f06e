package ring

import "testing"

func TestChunks(t *testing.T) {
	for size := 1; size <= 9; size++ {
		for n := 0; n <= 3*size+2; n++ {
			cs := Chunks(n, size)
			if len(cs) != size {
				t.Fatalf("Chunks(%d,%d): %d chunks", n, size, len(cs))
			}
			off, lo, hi := 0, n, 0
			for i, c := range cs {
				if c.Off != off || c.Len < 0 {
					t.Fatalf("Chunks(%d,%d)[%d] = %+v, want offset %d", n, size, i, c, off)
				}
				off = c.End()
				lo, hi = min(lo, c.Len), max(hi, c.Len)
			}
			if off != n {
				t.Fatalf("Chunks(%d,%d) covers %d elements", n, size, off)
			}
			if hi-lo > 1 {
				t.Fatalf("Chunks(%d,%d) not near-equal: %v", n, size, cs)
			}
		}
	}
}

func TestSegments(t *testing.T) {
	for _, r := range []Range{{0, 0}, {5, 0}, {3, 1}, {7, 10}, {0, 12}, {100, 1 << 12}} {
		for _, seg := range []int{1, 3, 4, 5, 12, 1000} {
			ns := NumSegments(r.Len, seg)
			if ns < 1 {
				t.Fatalf("NumSegments(%d,%d) = %d", r.Len, seg, ns)
			}
			off := r.Off
			for j := 0; j < ns; j++ {
				s := Segment(r, seg, j)
				if s.Off != off || s.Len > seg || (s.Len == 0 && r.Len != 0) {
					t.Fatalf("Segment(%+v,%d,%d) = %+v", r, seg, j, s)
				}
				off = s.End()
			}
			if off != r.End() {
				t.Fatalf("segments of %+v by %d end at %d", r, seg, off)
			}
		}
	}
}

// TestScheduleSimulated runs the schedule symbolically for every world size
// 1..8: each rank's chunk holds the set of ranks whose contribution it
// contains (a bitmask), and the steps move and merge those sets exactly as
// the real ring moves and adds floats.
func TestScheduleSimulated(t *testing.T) {
	for size := 1; size <= 8; size++ {
		full := uint32(1)<<size - 1
		// have[r][c]: contributions rank r holds for chunk c.
		have := make([][]uint32, size)
		for r := range have {
			have[r] = make([]uint32, size)
			for c := range have[r] {
				have[r][c] = 1 << r
			}
		}
		if Steps(size) != 2*(size-1) {
			t.Fatalf("Steps(%d) = %d", size, Steps(size))
		}
		sentPerRank := make([]int, size)
		for step := 0; step < Steps(size); step++ {
			// All sends of a step happen at once: read every message first.
			msgs := make([]uint32, size) // msgs[r]: what rank r sends
			for r := 0; r < size; r++ {
				st := Schedule(r, size, step)
				right := Schedule(Right(r, size), size, step)
				if right.Recv != st.Send || right.Phase != st.Phase {
					t.Fatalf("size %d step %d: rank %d sends chunk %d but rank %d receives %d",
						size, step, r, st.Send, Right(r, size), right.Recv)
				}
				if st.Send == st.Recv {
					t.Fatalf("size %d step %d rank %d sends and receives chunk %d", size, step, r, st.Send)
				}
				if step > 0 && Schedule(r, size, step-1).Recv != st.Send {
					t.Fatalf("size %d step %d rank %d: sends %d, not the chunk it just received (%d)",
						size, step, r, st.Send, Schedule(r, size, step-1).Recv)
				}
				if st.Phase == AllGather && have[r][st.Send] != full {
					t.Fatalf("size %d step %d rank %d: all-gathers chunk %d before it is fully reduced", size, step, r, st.Send)
				}
				msgs[r] = have[r][st.Send]
				sentPerRank[r]++
			}
			for r := 0; r < size; r++ {
				st := Schedule(r, size, step)
				in := msgs[Left(r, size)]
				switch st.Phase {
				case ReduceScatter:
					if have[r][st.Recv]&in != 0 {
						t.Fatalf("size %d step %d rank %d: chunk %d would count ranks %b twice", size, step, r, st.Recv, have[r][st.Recv]&in)
					}
					have[r][st.Recv] |= in
				case AllGather:
					if in != full {
						t.Fatalf("size %d step %d rank %d: received a partial chunk in all-gather", size, step, r)
					}
					have[r][st.Recv] = in
				}
			}
			if step == size-2 { // end of reduce-scatter
				for r := 0; r < size; r++ {
					if have[r][r] != full {
						t.Fatalf("size %d: after reduce-scatter rank %d holds %b of chunk %d", size, r, have[r][r], r)
					}
					if Schedule(r, size, step+1).Send != r {
						t.Fatalf("size %d: rank %d does not start all-gather with its own chunk", size, r)
					}
				}
			}
		}
		for r := 0; r < size; r++ {
			for c := 0; c < size; c++ {
				if have[r][c] != full {
					t.Fatalf("size %d: rank %d ends with %b for chunk %d", size, r, have[r][c], c)
				}
			}
			if sentPerRank[r] != 2*(size-1) {
				t.Fatalf("size %d rank %d sent %d chunks", size, r, sentPerRank[r])
			}
		}
	}
}

// TestScheduleBytes checks the bandwidth claim: each rank sends about
// 2(N-1)/N of the buffer, never more than 2(N-1) ceil(n/N) elements.
func TestScheduleBytes(t *testing.T) {
	for size := 2; size <= 8; size++ {
		for _, n := range []int{0, 1, size - 1, size + 1, 1000, 1<<20 + 3} {
			cs := Chunks(n, size)
			for r := 0; r < size; r++ {
				sent := 0
				for s := 0; s < Steps(size); s++ {
					sent += cs[Schedule(r, size, s).Send].Len
				}
				if limit := 2 * (size - 1) * ((n + size - 1) / size); sent > limit {
					t.Fatalf("size %d n %d rank %d sends %d elements > %d", size, n, r, sent, limit)
				}
			}
		}
	}
}

func TestBroadcastRole(t *testing.T) {
	if r, f := BroadcastRole(0, 1, 0); r || f {
		t.Fatal("world of one must not move data")
	}
	for size := 2; size <= 8; size++ {
		for root := 0; root < size; root++ {
			// Walk the chain from root: every rank but root receives exactly
			// once, from a forwarding left neighbour.
			got := 0
			for r := 0; r < size; r++ {
				recv, fwd := BroadcastRole(r, size, root)
				if recv != (r != root) {
					t.Fatalf("size %d root %d rank %d recv=%v", size, root, r, recv)
				}
				if recv {
					got++
					if _, lf := BroadcastRole(Left(r, size), size, root); !lf {
						t.Fatalf("size %d root %d: rank %d's left neighbour does not forward", size, root, r)
					}
				}
				if fwd != (Right(r, size) != root) {
					t.Fatalf("size %d root %d rank %d forward=%v", size, root, r, fwd)
				}
			}
			if got != size-1 {
				t.Fatalf("size %d root %d: %d receivers", size, root, got)
			}
		}
	}
}
