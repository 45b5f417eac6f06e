package cpu

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// ropeMaxPositions bounds the cos/sin table (positions × headDim/2 × 2
// floats): 1M positions is far beyond any context we train on, and keeps a
// corrupt position from allocating gigabytes.
const ropeMaxPositions = 1 << 20

type ropeKey struct {
	theta   float32
	headDim int
}

// ropeTable holds cos and sin of pos·f_i for pos < positions, i < half,
// row-major [positions][half], computed in float64 and rounded once.
type ropeTable struct {
	half      int
	positions int
	cos, sin  []float32
}

// ropeTableFor returns the table for (theta, headDim) covering maxPos,
// growing the cached one (at least doubling, so a slowly growing max costs
// amortised O(1) per position).
func (be *Backend) ropeTableFor(theta float32, headDim, maxPos int) *ropeTable {
	key := ropeKey{theta, headDim}
	t := be.rope[key]
	if t != nil && maxPos < t.positions {
		return t
	}
	half := headDim / 2
	n := maxPos + 1
	old := 0
	if t != nil {
		old = t.positions
		n = max(n, min(2*old, ropeMaxPositions))
	}
	n = max(n, 256)
	nt := &ropeTable{half: half, positions: n, cos: make([]float32, n*half), sin: make([]float32, n*half)}
	if t != nil {
		copy(nt.cos, t.cos)
		copy(nt.sin, t.sin)
	}
	freq := make([]float64, half)
	for i := range freq {
		freq[i] = math.Pow(float64(theta), -2*float64(i)/float64(headDim))
	}
	for p := old; p < n; p++ {
		for i, f := range freq {
			s, c := math.Sincos(float64(p) * f)
			nt.cos[p*half+i] = float32(c)
			nt.sin[p*half+i] = float32(s)
		}
	}
	be.rope[key] = nt
	return nt
}

// ropeSetup checks RoPE's arguments and returns the table.
func (be *Backend) ropeSetup(op string, a, b []float32, aName, bName string, positions []int32, rows, heads, headDim int, theta float32) (*ropeTable, error) {
	n, err := numel(op, "rows, heads, headDim", rows, heads, headDim)
	if err != nil {
		return nil, err
	}
	if headDim <= 0 || headDim%2 != 0 {
		return nil, fmt.Errorf("cpu: %s: headDim = %d, want a positive even number", op, headDim)
	}
	if !(theta > 0) || math.IsInf(float64(theta), 0) {
		return nil, fmt.Errorf("cpu: %s: theta = %v, want > 0", op, theta)
	}
	if len(positions) != rows {
		return nil, fmt.Errorf("cpu: %s: len(positions) = %d, want rows=%d", op, len(positions), rows)
	}
	if err := wantLen(op, aName, len(a), n, "rows*heads*headDim"); err != nil {
		return nil, err
	}
	if err := wantLen(op, bName, len(b), n, "rows*heads*headDim"); err != nil {
		return nil, err
	}
	maxPos := 0
	for i, p := range positions {
		if p < 0 || p >= ropeMaxPositions {
			return nil, fmt.Errorf("cpu: %s: positions[%d] = %d outside [0, %d)", op, i, p, ropeMaxPositions)
		}
		maxPos = max(maxPos, int(p))
	}
	return be.ropeTableFor(theta, headDim, maxPos), nil
}

// RoPE rotates each head by its row's position (rotate-half convention).
// Each pair (j, j+h) is read before it is written, so out may alias in.
func (be *Backend) RoPE(out, in kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	const op = "RoPE"
	o, err := host(op, "out", out)
	if err != nil {
		return err
	}
	x, err := host(op, "in", in)
	if err != nil {
		return err
	}
	t, err := be.ropeSetup(op, o, x, "out", "in", positions, rows, heads, headDim, theta)
	if err != nil {
		return err
	}
	half := t.half
	be.parallelFor(rows, 3*heads*headDim, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p := int(positions[r])
			c := t.cos[p*half : (p+1)*half]
			s := t.sin[p*half : (p+1)*half]
			for h := 0; h < heads; h++ {
				base := (r*heads + h) * headDim
				x0, x1 := x[base:base+half], x[base+half:base+headDim]
				o0, o1 := o[base:base+half], o[base+half:base+headDim]
				for j := range c {
					a, b := x0[j], x1[j]
					o0[j] = a*c[j] - b*s[j]
					o1[j] = b*c[j] + a*s[j]
				}
			}
		}
	})
	return nil
}

// RoPEBackward adds the inverse rotation (by −angle) of dOut into dIn; a nil
// dIn (not needed) only checks the arguments.
func (be *Backend) RoPEBackward(dIn, dOut kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	const op = "RoPEBackward"
	di, hasDIn, err := optHost(op, "dIn", dIn)
	if err != nil {
		return err
	}
	do, err := host(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if !hasDIn {
		di = do // check the shapes all the same, then do nothing
	}
	t, err := be.ropeSetup(op, di, do, "dIn", "dOut", positions, rows, heads, headDim, theta)
	if err != nil || !hasDIn {
		return err
	}
	half := t.half
	be.parallelFor(rows, 3*heads*headDim, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p := int(positions[r])
			c := t.cos[p*half : (p+1)*half]
			s := t.sin[p*half : (p+1)*half]
			for h := 0; h < heads; h++ {
				base := (r*heads + h) * headDim
				g0, g1 := do[base:base+half], do[base+half:base+headDim]
				d0, d1 := di[base:base+half], di[base+half:base+headDim]
				for j := range c {
					a, b := g0[j], g1[j]
					d0[j] += a*c[j] + b*s[j]
					d1[j] += b*c[j] - a*s[j]
				}
			}
		}
	})
	return nil
}
