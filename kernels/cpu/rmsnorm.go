package cpu

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// RMSNorm computes rstd[r] = 1/sqrt(mean(in[r,:]²) + eps) (the sum in
// float64) and out[r,:] = in[r,:]·rstd[r]·weight. out may alias in.
func (be *Backend) RMSNorm(out, rstd, in, weight kernels.Buffer, rows, dim int, eps float32) error {
	const op = "RMSNorm"
	o, err := host(op, "out", out)
	if err != nil {
		return err
	}
	rs, err := host(op, "rstd", rstd)
	if err != nil {
		return err
	}
	x, err := host(op, "in", in)
	if err != nil {
		return err
	}
	w, err := host(op, "weight", weight)
	if err != nil {
		return err
	}
	if err := checkRowsDim(op, rows, dim, "out", o, "in", x, rs, w); err != nil {
		return err
	}
	if !(eps >= 0) {
		return fmt.Errorf("cpu: %s: eps = %v, want >= 0", op, eps)
	}
	be.parallelFor(rows, 3*dim, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr := x[r*dim : (r+1)*dim]
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(ss/float64(dim)+float64(eps))
			rs[r] = float32(inv)
			r32 := float32(inv)
			or := o[r*dim : (r+1)*dim]
			for i, v := range xr {
				or[i] = v * r32 * w[i]
			}
		}
	})
	return nil
}

// RMSNormBackward adds, with g = dOut, x = in, w = weight, r = rstd:
//
//	dIn[r,i]   += r·w_i·g_i − x_i · r³/dim · Σ_j g_j·w_j·x_j
//	dWeight[i] += Σ_r g[r,i]·x[r,i]·r[r]
//
// Either output may be nil (not needed).
//
// dIn is split across goroutines by rows, dWeight by columns, so neither
// needs partial buffers and both sum in a fixed order.
func (be *Backend) RMSNormBackward(dIn, dWeight, dOut, in, weight, rstd kernels.Buffer, rows, dim int) error {
	const op = "RMSNormBackward"
	di, hasDIn, err := optHost(op, "dIn", dIn)
	if err != nil {
		return err
	}
	dw, hasDW, err := optHost(op, "dWeight", dWeight)
	if err != nil {
		return err
	}
	g, err := host(op, "dOut", dOut)
	if err != nil {
		return err
	}
	x, err := host(op, "in", in)
	if err != nil {
		return err
	}
	w, err := host(op, "weight", weight)
	if err != nil {
		return err
	}
	rs, err := host(op, "rstd", rstd)
	if err != nil {
		return err
	}
	if err := checkRowsDim(op, rows, dim, "dOut", g, "in", x, rs, w); err != nil {
		return err
	}
	if hasDIn {
		if err := wantLen(op, "dIn", len(di), rows*dim, "rows*dim"); err != nil {
			return err
		}
	}
	if hasDW {
		if err := wantLen(op, "dWeight", len(dw), dim, "dim"); err != nil {
			return err
		}
	}
	// dWeight first: if dIn aliases in or dOut (an in-place caller), the
	// row pass below would change what this reads.
	if hasDW {
		const run = 16
		runs := (dim + run - 1) / run
		be.parallelFor(runs, rows*run*2, func(lo, hi int) {
			c0, c1 := lo*run, min(hi*run, dim)
			acc := make([]float64, c1-c0)
			for r := 0; r < rows; r++ {
				rr := float64(rs[r])
				gr := g[r*dim+c0 : r*dim+c1]
				xr := x[r*dim+c0 : r*dim+c1]
				for j := range acc {
					acc[j] += float64(gr[j]) * float64(xr[j]) * rr
				}
			}
			for j, a := range acc {
				dw[c0+j] += float32(a)
			}
		})
	}
	if !hasDIn {
		return nil
	}
	be.parallelFor(rows, 5*dim, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			gr := g[r*dim : (r+1)*dim]
			xr := x[r*dim : (r+1)*dim]
			var dot float64
			for i := range gr {
				dot += float64(gr[i]) * float64(w[i]) * float64(xr[i])
			}
			rr := float64(rs[r])
			r32 := float32(rr)
			coef := float32(rr * rr * rr * dot / float64(dim))
			dr := di[r*dim : (r+1)*dim]
			for i := range dr {
				dr[i] += r32*w[i]*gr[i] - xr[i]*coef
			}
		}
	})
	return nil
}

// checkRowsDim checks the shapes shared by RMSNorm and its backward:
// a and b are [rows, dim], rs is [rows], w is [dim].
func checkRowsDim(op string, rows, dim int, aName string, a []float32, bName string, b, rs, w []float32) error {
	n, err := numel(op, "rows, dim", rows, dim)
	if err != nil {
		return err
	}
	if err := wantLen(op, aName, len(a), n, "rows*dim"); err != nil {
		return err
	}
	if err := wantLen(op, bName, len(b), n, "rows*dim"); err != nil {
		return err
	}
	if err := wantLen(op, "rstd", len(rs), rows, "rows"); err != nil {
		return err
	}
	return wantLen(op, "weight", len(w), dim, "dim")
}
