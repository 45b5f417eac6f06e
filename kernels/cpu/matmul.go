package cpu

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// Matmul computes out[m,n] = beta·out + scale·in[m,k]·w[n,k]ᵀ (+ bias[n]),
// beta = 1 if accumulate else 0: one sgemm(NoTrans, Trans), then the bias in Go.
func (be *Backend) Matmul(out, in, w, bias kernels.Buffer, m, k, n int, scale float32, accumulate bool) error {
	const op = "Matmul"
	o, err := host(op, "out", out)
	if err != nil {
		return err
	}
	x, err := host(op, "in", in)
	if err != nil {
		return err
	}
	wt, err := host(op, "w", w)
	if err != nil {
		return err
	}
	bs, hasBias, err := optHost(op, "bias", bias)
	if err != nil {
		return err
	}
	if err := checkGemmShape(op, m, k, n); err != nil {
		return err
	}
	if err := wantLen(op, "out", len(o), m*n, "m*n"); err != nil {
		return err
	}
	if err := wantLen(op, "in", len(x), m*k, "m*k"); err != nil {
		return err
	}
	if err := wantLen(op, "w", len(wt), n*k, "n*k"); err != nil {
		return err
	}
	if hasBias {
		if err := wantLen(op, "bias", len(bs), n, "n"); err != nil {
			return err
		}
	}
	if overlaps(o, x) || overlaps(o, wt) {
		return fmt.Errorf("cpu: %s: out overlaps in or w", op)
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	be.gemm.sgemm(false, true, m, n, k, scale, x, k, wt, k, beta, o, n)
	if hasBias {
		be.parallelFor(m, n, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := o[r*n : (r+1)*n]
				for j, b := range bs {
					row[j] += b
				}
			}
		})
	}
	return nil
}

// MatmulBackward adds, for out = scale·in·wᵀ + bias:
//
//	dIn  += scale·dOut·w     sgemm(NoTrans, NoTrans)
//	dW   += scale·dOutᵀ·in   sgemm(Trans, NoTrans)
//	dBias += Σ_m dOut        column sums in Go
//
// Each nil gradient output is skipped, and then its operand may be nil too
// (a frozen weight's dW needs no in; a dIn-less call needs no w).
func (be *Backend) MatmulBackward(dIn, dW, dBias, dOut, in, w kernels.Buffer, m, k, n int, scale float32) error {
	const op = "MatmulBackward"
	if err := checkGemmShape(op, m, k, n); err != nil {
		return err
	}
	do, err := host(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if err := wantLen(op, "dOut", len(do), m*n, "m*n"); err != nil {
		return err
	}
	di, hasDIn, err := optHost(op, "dIn", dIn)
	if err != nil {
		return err
	}
	dw, hasDW, err := optHost(op, "dW", dW)
	if err != nil {
		return err
	}
	db, hasDB, err := optHost(op, "dBias", dBias)
	if err != nil {
		return err
	}
	var x, wt []float32
	if hasDIn {
		if err := wantLen(op, "dIn", len(di), m*k, "m*k"); err != nil {
			return err
		}
		if wt, err = host(op, "w (needed for dIn)", w); err != nil {
			return err
		}
		if err := wantLen(op, "w", len(wt), n*k, "n*k"); err != nil {
			return err
		}
		if overlaps(di, do) || overlaps(di, wt) {
			return fmt.Errorf("cpu: %s: dIn overlaps dOut or w", op)
		}
	}
	if hasDW {
		if err := wantLen(op, "dW", len(dw), n*k, "n*k"); err != nil {
			return err
		}
		if x, err = host(op, "in (needed for dW)", in); err != nil {
			return err
		}
		if err := wantLen(op, "in", len(x), m*k, "m*k"); err != nil {
			return err
		}
		if overlaps(dw, do) || overlaps(dw, x) {
			return fmt.Errorf("cpu: %s: dW overlaps dOut or in", op)
		}
	}
	if hasDB {
		if err := wantLen(op, "dBias", len(db), n, "n"); err != nil {
			return err
		}
	}
	if hasDIn {
		be.gemm.sgemm(false, false, m, k, n, scale, do, n, wt, k, 1, di, k)
	}
	if hasDW {
		be.gemm.sgemm(true, false, n, k, m, scale, do, n, x, k, 1, dw, k)
	}
	if hasDB {
		be.columnSums(db, do, m, n)
	}
	return nil
}

// columnSums adds Σ_r src[r, j] into dst[j], in float64. Goroutines split the
// columns (in cache-line runs), so each sum runs over rows in a fixed order.
func (be *Backend) columnSums(dst, src []float32, rows, cols int) {
	const run = 16
	runs := (cols + run - 1) / run
	be.parallelFor(runs, rows*run, func(lo, hi int) {
		c0, c1 := lo*run, min(hi*run, cols)
		acc := make([]float64, c1-c0)
		for r := 0; r < rows; r++ {
			row := src[r*cols+c0 : r*cols+c1]
			for j, v := range row {
				acc[j] += float64(v)
			}
		}
		for j, a := range acc {
			dst[c0+j] += float32(a)
		}
	})
}

// checkGemmShape rejects negative sizes and sizes a C int cannot carry, and
// products that overflow.
func checkGemmShape(op string, m, k, n int) error {
	if !fitsCInt(m, k, n) {
		return fmt.Errorf("cpu: %s: m=%d k=%d n=%d: each must be in [0, 2^31)", op, m, k, n)
	}
	if _, err := numel(op, "m, k, n", m, k, n); err != nil {
		return err
	}
	return nil
}
