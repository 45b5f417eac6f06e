package cuda

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// normBlock is the thread count of the one-block-per-row kernels.
const normBlock = 256

// rowsGrid is the grid of a one-block-per-row kernel (they loop over rows
// beyond it).
func rowsGrid(rows int) [3]uint32 { return [3]uint32{uint32(min(rows, 1<<16)), 1, 1} }

// checkRowsDim checks the shapes shared by RMSNorm and its backward: a and b
// are [rows, dim], rs is [rows], w is [dim].
func checkRowsDim(op string, rows, dim int, aName string, a *Buffer, bName string, b, rs, w *Buffer) error {
	n, err := numel(op, "rows, dim", rows, dim)
	if err != nil {
		return err
	}
	if err := fitInt32(op, "rows, dim", rows, dim); err != nil {
		return err
	}
	if err := wantLen(op, aName, a, n, "rows*dim"); err != nil {
		return err
	}
	if err := wantLen(op, bName, b, n, "rows*dim"); err != nil {
		return err
	}
	if err := wantLen(op, "rstd", rs, rows, "rows"); err != nil {
		return err
	}
	return wantLen(op, "weight", w, dim, "dim")
}

// rmsNorm is RMSNorm with out, in and weight float32 or bf16 (see dtMask)
// and rstd float32: computes rstd[r] = 1/sqrt(mean(in[r,:]²) + eps) and
// out[r,:] = in[r,:]·rstd[r]·weight. out may alias in.
func (be *Backend) rmsNorm(out, rstd, in, weight kernels.Buffer, rows, dim int, eps float32) error {
	const op = "RMSNorm"
	o, err := be.anyBuf(op, "out", out)
	if err != nil {
		return err
	}
	rs, err := be.buf(op, "rstd", rstd)
	if err != nil {
		return err
	}
	x, err := be.anyBuf(op, "in", in)
	if err != nil {
		return err
	}
	w, err := be.anyBuf(op, "weight", weight)
	if err != nil {
		return err
	}
	if err := checkRowsDim(op, rows, dim, "out", o, "in", x, rs, w); err != nil {
		return err
	}
	if !(eps >= 0) {
		return fmt.Errorf("cuda: %s: eps = %v, want >= 0", op, eps)
	}
	if (o.overlaps(x) && !o.same(x)) || o.overlaps(w) || o.overlaps(rs) || rs.overlaps(x) || rs.overlaps(w) {
		return fmt.Errorf("cuda: %s: out may alias in exactly; no other arguments may overlap", op)
	}
	return be.launch(op, "pt_rmsnorm", rowsGrid(rows), [3]uint32{normBlock, 1, 1}, 0,
		argP(o.ptr()), argP(rs.ptr()), argP(x.ptr()), argP(w.ptr()), argI(rows), argI(dim), argF(eps), argI(int(dtMask(o, nil, x, w))))
}

// rmsNormBackward is RMSNormBackward with dIn, dOut, in and weight float32
// or bf16 (see dtMask), dWeight and rstd float32: adds the gradients w.r.t.
// in and weight (either may be nil). dWeight is computed first, so dIn may
// alias in or dOut.
func (be *Backend) rmsNormBackward(dIn, dWeight, dOut, in, weight, rstd kernels.Buffer, rows, dim int) error {
	const op = "RMSNormBackward"
	di, err := be.optAny(op, "dIn", dIn)
	if err != nil {
		return err
	}
	dw, err := be.optBuf(op, "dWeight", dWeight)
	if err != nil {
		return err
	}
	g, err := be.anyBuf(op, "dOut", dOut)
	if err != nil {
		return err
	}
	x, err := be.anyBuf(op, "in", in)
	if err != nil {
		return err
	}
	w, err := be.anyBuf(op, "weight", weight)
	if err != nil {
		return err
	}
	rs, err := be.buf(op, "rstd", rstd)
	if err != nil {
		return err
	}
	if err := checkRowsDim(op, rows, dim, "dOut", g, "in", x, rs, w); err != nil {
		return err
	}
	if di != nil {
		if err := wantLen(op, "dIn", di, rows*dim, "rows*dim"); err != nil {
			return err
		}
		if (di.overlaps(g) && !di.same(g)) || (di.overlaps(x) && !di.same(x)) || di.overlaps(w) || di.overlaps(rs) || di.overlaps(dw) {
			return fmt.Errorf("cuda: %s: dIn may alias dOut or in exactly; no other arguments may overlap", op)
		}
	}
	if dw != nil {
		if err := wantLen(op, "dWeight", dw, dim, "dim"); err != nil {
			return err
		}
		if dw.overlaps(g) || dw.overlaps(x) || dw.overlaps(w) || dw.overlaps(rs) {
			return fmt.Errorf("cuda: %s: dWeight overlaps an input", op)
		}
		if err := be.launch(op, "pt_rmsnorm_backward_dw", grid1(dim), block1, 0,
			argP(dw.ptr()), argP(g.ptr()), argP(x.ptr()), argP(rs.ptr()), argI(rows), argI(dim), argI(int(dtMask(nil, g, x)))); err != nil {
			return err
		}
	}
	if di == nil {
		return nil
	}
	return be.launch(op, "pt_rmsnorm_backward_dx", rowsGrid(rows), [3]uint32{normBlock, 1, 1}, 0,
		argP(di.ptr()), argP(g.ptr()), argP(x.ptr()), argP(w.ptr()), argP(rs.ptr()), argI(rows), argI(dim), argI(int(dtMask(di, g, x, w))))
}

// ropeMaxPositions bounds the cos/sin table, as in the CPU backend.
const ropeMaxPositions = 1 << 20

type ropeKey struct {
	theta   float32
	headDim int
}

// ropeTable is cos and sin of pos·f_i for pos < positions, i < half, in
// device memory, row-major [positions][half]. The values are computed on
// the host in float64 and rounded once, with the CPU backend's formula, so
// both backends use the same float32 cos/sin.
type ropeTable struct {
	half, positions int
	cos, sin        uint64
}

// ropeTableFor returns the table for (theta, headDim) covering maxPos,
// growing it (at least doubling).
func (be *Backend) ropeTableFor(theta float32, headDim, maxPos int) (*ropeTable, error) {
	key := ropeKey{theta, headDim}
	t := be.rope[key]
	if t != nil && maxPos < t.positions {
		return t, nil
	}
	half := headDim / 2
	n := maxPos + 1
	if t != nil {
		n = max(n, min(2*t.positions, ropeMaxPositions))
	}
	n = max(n, 256)
	cosH, sinH := make([]float32, n*half), make([]float32, n*half)
	freq := make([]float64, half)
	for i := range freq {
		freq[i] = math.Pow(float64(theta), -2*float64(i)/float64(headDim))
	}
	for p := 0; p < n; p++ {
		for i, f := range freq {
			s, c := math.Sincos(float64(p) * f)
			cosH[p*half+i] = float32(c)
			sinH[p*half+i] = float32(s)
		}
	}
	if t != nil { // queued kernels may still read the old table
		if err := be.g.sync(); err != nil {
			return nil, err
		}
		be.g.free(t.cos)
		be.g.free(t.sin)
		delete(be.rope, key)
	}
	nt := &ropeTable{half: half, positions: n}
	var err error
	if nt.cos, err = be.g.alloc(4 * n * half); err != nil {
		return nil, err
	}
	if nt.sin, err = be.g.alloc(4 * n * half); err != nil {
		be.g.free(nt.cos)
		return nil, err
	}
	if err := be.g.htod(nt.cos, ptrOf(cosH), 4*n*half); err != nil {
		return nil, err
	}
	if err := be.g.htod(nt.sin, ptrOf(sinH), 4*n*half); err != nil {
		return nil, err
	}
	be.rope[key] = nt
	return nt, nil
}

// ropeSetup checks RoPE's arguments and returns the table.
func (be *Backend) ropeSetup(op string, a, b *Buffer, aName, bName string, positions []int32, rows, heads, headDim int, theta float32) (*ropeTable, error) {
	n, err := numel(op, "rows, heads, headDim", rows, heads, headDim)
	if err != nil {
		return nil, err
	}
	if err := fitInt32(op, "rows, heads, headDim", rows, heads, headDim); err != nil {
		return nil, err
	}
	if headDim <= 0 || headDim%2 != 0 {
		return nil, fmt.Errorf("cuda: %s: headDim = %d, want a positive even number", op, headDim)
	}
	if !(theta > 0) || math.IsInf(float64(theta), 0) {
		return nil, fmt.Errorf("cuda: %s: theta = %v, want > 0", op, theta)
	}
	if len(positions) != rows {
		return nil, fmt.Errorf("cuda: %s: len(positions) = %d, want rows=%d", op, len(positions), rows)
	}
	if err := wantLen(op, aName, a, n, "rows*heads*headDim"); err != nil {
		return nil, err
	}
	if err := wantLen(op, bName, b, n, "rows*heads*headDim"); err != nil {
		return nil, err
	}
	if a.overlaps(b) && !a.same(b) {
		return nil, fmt.Errorf("cuda: %s: %s and %s overlap (they may alias exactly)", op, aName, bName)
	}
	maxPos := 0
	for i, p := range positions {
		if p < 0 || p >= ropeMaxPositions {
			return nil, fmt.Errorf("cuda: %s: positions[%d] = %d outside [0, %d)", op, i, p, ropeMaxPositions)
		}
		maxPos = max(maxPos, int(p))
	}
	t, err := be.ropeTableFor(theta, headDim, maxPos)
	if err != nil {
		return nil, fmt.Errorf("cuda: %s: cos/sin table: %w", op, err)
	}
	return t, nil
}

// ropeForward is RoPE on float32 or bf16 buffers (see dtMask): rotates each head
// by its row's position (rotate-half convention). out may alias in.
func (be *Backend) ropeForward(out, in kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	const op = "RoPE"
	o, err := be.anyBuf(op, "out", out)
	if err != nil {
		return err
	}
	x, err := be.anyBuf(op, "in", in)
	if err != nil {
		return err
	}
	t, err := be.ropeSetup(op, o, x, "out", "in", positions, rows, heads, headDim, theta)
	if err != nil {
		return err
	}
	if o.n == 0 {
		return nil
	}
	pos, err := be.uploadInts(op, positions)
	if err != nil {
		return err
	}
	return be.launch(op, "pt_rope", grid1(rows*heads*headDim/2), block1, 0,
		argP(o.ptr()), argP(x.ptr()), argP(pos), argP(t.cos), argP(t.sin), argI(rows), argI(heads), argI(headDim), argI(int(dtMask(o, x))))
}

// ropeBackward is RoPEBackward on float32 or bf16 buffers (see dtMask):
// adds the inverse rotation of dOut into dIn; a nil dIn (not needed) only
// checks the arguments.
func (be *Backend) ropeBackward(dIn, dOut kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	const op = "RoPEBackward"
	di, err := be.optAny(op, "dIn", dIn)
	if err != nil {
		return err
	}
	do, err := be.anyBuf(op, "dOut", dOut)
	if err != nil {
		return err
	}
	check := di
	if check == nil {
		check = do // check the shapes all the same, then do nothing
	}
	t, err := be.ropeSetup(op, check, do, "dIn", "dOut", positions, rows, heads, headDim, theta)
	if err != nil || di == nil || do.n == 0 {
		return err
	}
	pos, err := be.uploadInts(op, positions)
	if err != nil {
		return err
	}
	return be.launch(op, "pt_rope_backward", grid1(rows*heads*headDim/2), block1, 0,
		argP(di.ptr()), argP(do.ptr()), argP(pos), argP(t.cos), argP(t.sin), argI(rows), argI(heads), argI(headDim), argI(int(dtMask(di, do))))
}
