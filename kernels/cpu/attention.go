package cpu

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu/internal/vmath"
)

// attnBlock is the number of query rows (forward, backward dQ pass) or key
// rows (backward dK/dV pass) one work item covers. Each item keeps an
// attnBlock × seq tile of scores per worker, never seq × seq per head; 64
// rows make tiles big enough for sgemm to run near full speed while giving
// the scheduler several items per head to balance the causal triangle.
const attnBlock = 64

// attnShape holds the checked sizes of an attention call.
type attnShape struct {
	batch, seq, heads, kvHeads, headDim int
	rep                                 int // query heads per kv head
	ldq, ldk                            int // row strides of q/out/dOut and of k/v
	scale                               float32
}

func (s attnShape) qOff(b, i, h int) int   { return ((b*s.seq+i)*s.heads + h) * s.headDim }
func (s attnShape) kOff(b, j, g int) int   { return ((b*s.seq+j)*s.kvHeads + g) * s.headDim }
func (s attnShape) lseOff(b, h, i int) int { return (b*s.heads+h)*s.seq + i }

func checkAttention(op string, batch, seq, heads, kvHeads, headDim int) (attnShape, error) {
	if heads <= 0 || kvHeads <= 0 || headDim <= 0 || batch < 0 || seq < 0 {
		return attnShape{}, fmt.Errorf("cpu: %s: batch=%d seq=%d heads=%d kvHeads=%d headDim=%d: sizes must be positive",
			op, batch, seq, heads, kvHeads, headDim)
	}
	if heads%kvHeads != 0 {
		return attnShape{}, fmt.Errorf("cpu: %s: heads=%d is not a multiple of kvHeads=%d", op, heads, kvHeads)
	}
	if _, err := numel(op, "batch, seq, heads, headDim", batch, seq, heads, headDim); err != nil {
		return attnShape{}, err
	}
	if !fitsCInt(seq, heads*headDim) {
		return attnShape{}, fmt.Errorf("cpu: %s: seq=%d or heads*headDim=%d too large", op, seq, heads*headDim)
	}
	return attnShape{
		batch: batch, seq: seq, heads: heads, kvHeads: kvHeads, headDim: headDim,
		rep: heads / kvHeads, ldq: heads * headDim, ldk: kvHeads * headDim,
		scale: float32(1 / math.Sqrt(float64(headDim))),
	}, nil
}

// attnArg is one buffer argument of an attention op with its expected size.
type attnArg struct {
	name string
	buf  kernels.Buffer
	want int
	opt  bool // a gradient output that may be nil
	out  bool // written by the op

	data    []float32
	present bool // false for an absent optional argument
}

// fetchArgs resolves and checks the buffers, and rejects any output that
// overlaps another argument: the tiles are written while others are read.
func fetchArgs(op string, args []*attnArg) error {
	for _, a := range args {
		if a.opt {
			d, ok, err := optHost(op, a.name, a.buf)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			a.data = d
		} else {
			d, err := host(op, a.name, a.buf)
			if err != nil {
				return err
			}
			a.data = d
		}
		a.present = true
		shape := "batch*seq*heads*headDim"
		switch a.name {
		case "k", "v", "dk", "dv":
			shape = "batch*seq*kvHeads*headDim"
		case "lse":
			shape = "batch*heads*seq"
		}
		if err := wantLen(op, a.name, len(a.data), a.want, shape); err != nil {
			return err
		}
	}
	for _, a := range args {
		if !a.out || !a.present {
			continue
		}
		for _, b := range args {
			if a != b && overlaps(a.data, b.data) {
				return fmt.Errorf("cpu: %s: %s overlaps %s", op, a.name, b.name)
			}
		}
	}
	return nil
}

// scratch returns per-worker slices of at least size floats each, reusing
// the Backend's buffers (they only grow).
func (be *Backend) scratch(workers, size int) [][]float32 {
	if len(be.workerScratch) < workers {
		be.workerScratch = append(be.workerScratch, make([][]float32, workers-len(be.workerScratch))...)
	}
	for w := 0; w < workers; w++ {
		if len(be.workerScratch[w]) < size {
			be.workerScratch[w] = make([]float32, size)
		}
	}
	return be.workerScratch[:workers]
}

// singleThreadBLAS makes OpenBLAS run each call on the calling thread while
// the attention workers call it from several goroutines at once, and
// returns the function that restores the thread count. Measured on 2 cores:
// two goroutines calling a 2-thread OpenBLAS on 64-row tiles reach ~1–7
// GFLOP/s (they fight over one thread pool), the same goroutines with
// OpenBLAS at 1 thread ~145, one goroutine with 2 OpenBLAS threads ~95.
//
// The thread count is process-wide state of the library: another Backend
// running GEMMs at the same moment would run them single-threaded (slower,
// never wrong). Calling one OpenBLAS from several goroutines is slow anyway,
// so a process should drive one Backend at a time.
func (be *Backend) singleThreadBLAS(workers int) func() {
	if be.ob == nil || workers <= 1 || be.blasThreads <= 1 {
		return func() {}
	}
	be.ob.setNumThreads(1)
	return func() { be.ob.setNumThreads(be.blasThreads) }
}

// Attention is causal grouped-query attention, flash-attention style: work
// items are (batch, head, block of attnBlock query rows), heaviest (last)
// blocks first. Per item, with keys [0, end) where end is the block's last
// row + 1:
//
//	S = scale·Q_blk·K[:end]ᵀ          sgemm, into a per-worker tile
//	E = exp(S − rowmax), masked        vectorised exp, row sums in float64; lse kept
//	O_blk = (E·V[:end]) / rowsum       sgemm straight into out, then scaled
//
// Q, K and V are read in place through sgemm's row strides (one head of a
// [seq, heads, headDim] tensor is a matrix with stride heads·headDim).
func (be *Backend) Attention(out, lse, q, k, v kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
	const op = "Attention"
	sh, err := checkAttention(op, batch, seq, heads, kvHeads, headDim)
	if err != nil {
		return err
	}
	nq, nkv := batch*seq*heads*headDim, batch*seq*kvHeads*headDim
	aOut := &attnArg{name: "out", buf: out, want: nq, out: true}
	aLse := &attnArg{name: "lse", buf: lse, want: batch * heads * seq, out: true}
	aQ := &attnArg{name: "q", buf: q, want: nq}
	aK := &attnArg{name: "k", buf: k, want: nkv}
	aV := &attnArg{name: "v", buf: v, want: nkv}
	if err := fetchArgs(op, []*attnArg{aOut, aLse, aQ, aK, aV}); err != nil {
		return err
	}
	od, ld, qd, kd, vd := aOut.data, aLse.data, aQ.data, aK.data, aV.data

	nb := (seq + attnBlock - 1) / attnBlock
	bh := batch * heads
	items := bh * nb
	workers := min(be.threads, items)
	scr := be.scratch(workers, attnBlock*seq)
	defer be.singleThreadBLAS(workers)()
	be.parallelItems(items, func(w, it int) {
		blk := nb - 1 - it/bh // heaviest first
		b, h := (it%bh)/heads, (it%bh)%heads
		g := h / sh.rep
		i0 := blk * attnBlock
		i1 := min(seq, i0+attnBlock)
		rows, n := i1-i0, i1
		qo, ko := sh.qOff(b, i0, h), sh.kOff(b, 0, g)
		s := scr[w][:rows*n]
		var inv [attnBlock]float32
		be.gemm.sgemm(false, true, rows, n, headDim, sh.scale, qd[qo:], sh.ldq, kd[ko:], sh.ldk, 0, s, n)
		for r := 0; r < rows; r++ {
			i := i0 + r
			row := s[r*n : (r+1)*n]
			valid := row[:i+1]
			mx := vmath.Max(valid)
			sum := vmath.ExpShiftSum(valid, valid, mx)
			ld[sh.lseOff(b, h, i)] = float32(float64(mx) + math.Log(sum))
			inv[r] = float32(1 / sum)
			clear(row[i+1:])
		}
		// O = (e^(S−max)·V) / sum: normalising the rows×headDim output is
		// cheaper than the rows×end probabilities.
		be.gemm.sgemm(false, false, rows, headDim, n, 1, s, n, vd[ko:], sh.ldk, 0, od[qo:], sh.ldq)
		for r := 0; r < rows; r++ {
			o := od[qo+r*sh.ldq : qo+r*sh.ldq+headDim]
			for d := range o {
				o[d] *= inv[r]
			}
		}
	})
	return nil
}

// AttentionBackward adds into dq, dk, dv (each may be nil: not needed). P is
// recomputed from lse; D_i = rowsum(dO∘O). It runs two passes so that every
// output row has exactly one writer — no locks, no per-worker partial
// gradients, and sums in a fixed order (bit-reproducible whatever the
// thread count):
//
//	dQ pass, items (batch, head, query block):
//	  P = exp(scale·Q_blk·K[:end]ᵀ − lse), dP = dO_blk·V[:end]ᵀ,
//	  dS = P∘(dP − D), dQ_blk += scale·dS·K[:end]
//	dK/dV pass, items (batch, kv head, key block [j0, j1)), over the heads
//	that share the kv head and the query rows i >= j0:
//	  P = exp(scale·Q[j0:]·K_blkᵀ − lse), dV_blk += Pᵀ·dO[j0:],
//	  dP = dO[j0:]·V_blkᵀ, dS = P∘(dP − D), dK_blk += scale·dSᵀ·Q[j0:]
//
// The price is recomputing P and dP once more than a single pass would
// (7 tile GEMMs instead of 5); a single pass would have to sum the heads of a
// group into dK/dV concurrently.
func (be *Backend) AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
	const op = "AttentionBackward"
	sh, err := checkAttention(op, batch, seq, heads, kvHeads, headDim)
	if err != nil {
		return err
	}
	nq, nkv := batch*seq*heads*headDim, batch*seq*kvHeads*headDim
	aDQ := &attnArg{name: "dq", buf: dq, want: nq, opt: true, out: true}
	aDK := &attnArg{name: "dk", buf: dk, want: nkv, opt: true, out: true}
	aDV := &attnArg{name: "dv", buf: dv, want: nkv, opt: true, out: true}
	aDO := &attnArg{name: "dOut", buf: dOut, want: nq}
	aQ := &attnArg{name: "q", buf: q, want: nq}
	aK := &attnArg{name: "k", buf: k, want: nkv}
	aV := &attnArg{name: "v", buf: v, want: nkv}
	aO := &attnArg{name: "out", buf: out, want: nq}
	aL := &attnArg{name: "lse", buf: lse, want: batch * heads * seq}
	if err := fetchArgs(op, []*attnArg{aDQ, aDK, aDV, aDO, aQ, aK, aV, aO, aL}); err != nil {
		return err
	}
	dqd, dkd, dvd := aDQ.data, aDK.data, aDV.data
	dod, qd, kd, vd, odat, ld := aDO.data, aQ.data, aK.data, aV.data, aO.data, aL.data
	if !aDQ.present && !aDK.present && !aDV.present || len(dod) == 0 {
		return nil
	}

	// D[b,h,i] = Σ_d dO·O, in float64, laid out like lse.
	if cap(be.attnD) < batch*heads*seq {
		be.attnD = make([]float32, batch*heads*seq)
	}
	dd := be.attnD[:batch*heads*seq]
	be.parallelFor(batch*seq, 2*heads*headDim, func(lo, hi int) {
		for bi := lo; bi < hi; bi++ {
			b, i := bi/seq, bi%seq
			for h := 0; h < heads; h++ {
				o := sh.qOff(b, i, h)
				x, y := dod[o:o+headDim], odat[o:o+headDim]
				var s float64
				for d := range x {
					s += float64(x[d]) * float64(y[d])
				}
				dd[sh.lseOff(b, h, i)] = float32(s)
			}
		}
	})

	nb := (seq + attnBlock - 1) / attnBlock
	workers := min(be.threads, batch*heads*nb)
	scr := be.scratch(workers, 2*attnBlock*seq)
	defer be.singleThreadBLAS(workers)()

	if aDQ.present {
		bh := batch * heads
		be.parallelItems(bh*nb, func(w, it int) {
			blk := nb - 1 - it/bh
			b, h := (it%bh)/heads, (it%bh)%heads
			g := h / sh.rep
			i0 := blk * attnBlock
			i1 := min(seq, i0+attnBlock)
			rows, n := i1-i0, i1
			qo, ko := sh.qOff(b, i0, h), sh.kOff(b, 0, g)
			p := scr[w][:rows*n]
			dp := scr[w][attnBlock*seq : attnBlock*seq+rows*n]
			be.gemm.sgemm(false, true, rows, n, headDim, sh.scale, qd[qo:], sh.ldq, kd[ko:], sh.ldk, 0, p, n)
			be.gemm.sgemm(false, true, rows, n, headDim, 1, dod[qo:], sh.ldq, vd[ko:], sh.ldk, 0, dp, n)
			for r := 0; r < rows; r++ {
				i := i0 + r
				pr := p[r*n : r*n+i+1]
				dr := dp[r*n : r*n+i+1]
				vmath.ExpShiftSum(pr, pr, ld[sh.lseOff(b, h, i)])
				di := dd[sh.lseOff(b, h, i)]
				for j := range dr {
					dr[j] = pr[j] * (dr[j] - di)
				}
				clear(dp[r*n+i+1 : (r+1)*n])
			}
			be.gemm.sgemm(false, false, rows, headDim, n, sh.scale, dp, n, kd[ko:], sh.ldk, 1, dqd[qo:], sh.ldq)
		})
	}

	if !aDK.present && !aDV.present {
		return nil
	}
	bg := batch * kvHeads
	be.parallelItems(bg*nb, func(w, it int) {
		blk := it / bg // key block 0 sees every query: heaviest first
		b, g := (it%bg)/kvHeads, (it%bg)%kvHeads
		j0 := blk * attnBlock
		j1 := min(seq, j0+attnBlock)
		cols, nr := j1-j0, seq-j0
		ko := sh.kOff(b, j0, g)
		p := scr[w][:nr*cols]
		dp := scr[w][attnBlock*seq : attnBlock*seq+nr*cols]
		for t := 0; t < sh.rep; t++ {
			h := g*sh.rep + t
			qo := sh.qOff(b, j0, h)
			be.gemm.sgemm(false, true, nr, cols, headDim, sh.scale, qd[qo:], sh.ldq, kd[ko:], sh.ldk, 0, p, cols)
			for r := 0; r < nr; r++ {
				// Query j0+r sees keys j0..j0+r of this block.
				nv := min(cols, r+1)
				pr := p[r*cols : r*cols+nv]
				vmath.ExpShiftSum(pr, pr, ld[sh.lseOff(b, h, j0+r)])
				clear(p[r*cols+nv : (r+1)*cols])
			}
			if aDV.present {
				be.gemm.sgemm(true, false, cols, headDim, nr, 1, p, cols, dod[qo:], sh.ldq, 1, dvd[ko:], sh.ldk)
			}
			if !aDK.present {
				continue
			}
			be.gemm.sgemm(false, true, nr, cols, headDim, 1, dod[qo:], sh.ldq, vd[ko:], sh.ldk, 0, dp, cols)
			for r := 0; r < nr; r++ {
				di := dd[sh.lseOff(b, h, j0+r)]
				pr, dr := p[r*cols:(r+1)*cols], dp[r*cols:(r+1)*cols]
				for j := range dr {
					dr[j] = pr[j] * (dr[j] - di)
				}
			}
			be.gemm.sgemm(true, false, cols, headDim, nr, sh.scale, dp, cols, qd[qo:], sh.ldq, 1, dkd[ko:], sh.ldk)
		}
	})
	return nil
}
