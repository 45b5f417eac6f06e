package cuda

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// checkTokens verifies every token is in [0, vocab) (on the host, before
// anything is issued: the kernels index with them unchecked).
func checkTokens(op string, tokens []int32, vocab int) error {
	for i, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return fmt.Errorf("cuda: %s: tokens[%d] = %d outside [0, vocab=%d)", op, i, t, vocab)
		}
	}
	return nil
}

// embeddingShapes checks the sizes shared by Embedding and its backward.
func embeddingShapes(op string, rows, table *Buffer, rowsName, tableName string, tokens []int32, vocab, dim int) error {
	nOut, err := numel(op, "len(tokens), dim", len(tokens), dim)
	if err != nil {
		return err
	}
	nTab, err := numel(op, "vocab, dim", vocab, dim)
	if err != nil {
		return err
	}
	if err := fitInt32(op, "len(tokens), dim", len(tokens), dim); err != nil {
		return err
	}
	if err := wantLen(op, rowsName, rows, nOut, "len(tokens)*dim"); err != nil {
		return err
	}
	if table != nil {
		if err := wantLen(op, tableName, table, nTab, "vocab*dim"); err != nil {
			return err
		}
	}
	return checkTokens(op, tokens, vocab)
}

// Embedding gathers out[i, :] = table[tokens[i], :].
func (be *Backend) Embedding(out, table kernels.Buffer, tokens []int32, vocab, dim int) error {
	const op = "Embedding"
	o, err := be.buf(op, "out", out)
	if err != nil {
		return err
	}
	tb, err := be.buf(op, "table", table)
	if err != nil {
		return err
	}
	if err := embeddingShapes(op, o, tb, "out", "table", tokens, vocab, dim); err != nil {
		return err
	}
	if o.overlaps(tb) {
		return fmt.Errorf("cuda: %s: out overlaps table", op)
	}
	if o.n == 0 {
		return nil
	}
	tok, err := be.uploadInts(op, tokens)
	if err != nil {
		return err
	}
	return be.launch(op, "pt_embedding", grid1(o.n), block1, 0,
		argP(o.ptr()), argP(tb.ptr()), argP(tok), argL(int64(len(tokens))), argI(dim))
}

// EmbeddingBackward adds dTable[tokens[i], :] += dOut[i, :] (nil dTable:
// a frozen embedding, nothing to do once the arguments check out).
func (be *Backend) EmbeddingBackward(dTable, dOut kernels.Buffer, tokens []int32, vocab, dim int) error {
	const op = "EmbeddingBackward"
	dt, err := be.optBuf(op, "dTable", dTable)
	if err != nil {
		return err
	}
	do, err := be.buf(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if err := embeddingShapes(op, do, dt, "dOut", "dTable", tokens, vocab, dim); err != nil {
		return err
	}
	if dt == nil || do.n == 0 {
		return nil
	}
	if dt.overlaps(do) {
		return fmt.Errorf("cuda: %s: dTable overlaps dOut", op)
	}
	tok, err := be.uploadInts(op, tokens)
	if err != nil {
		return err
	}
	return be.launch(op, "pt_embedding_backward", grid1(dim), block1, 0,
		argP(dt.ptr()), argP(do.ptr()), argP(tok), argI(len(tokens)), argI(dim))
}

// checkGemmShape rejects negative sizes, sizes cuBLAS's int cannot carry,
// and products that overflow.
func checkGemmShape(op string, m, k, n int) error {
	if err := fitInt32(op, "m, k, n", m, k, n); err != nil {
		return err
	}
	_, err := numel(op, "m, k, n", m, k, n)
	return err
}

// Matmul computes out[m,n] = beta·out + scale·in[m,k]·w[n,k]ᵀ (+ bias[n]).
//
// Row-major to cuBLAS (see sgemmRowMajor): out = in·wᵀ is
// sgemmRowMajor(NoTrans, Trans, M=m, N=n, K=k, in, lda=k, w, ldb=k, out, ldc=n),
// which is the column-major call
//
//	cublasSgemm(OP_T, OP_N, m=n, n=m, k=k, alpha=scale, A=w, lda=k, B=in, ldb=k, beta, C=out, ldc=n):
//
// w's [n,k] row-major memory read column-major is wᵀ [k,n] (ld k), so
// op(A) = (wᵀ)ᵀ = w [n,k]; in read column-major is inᵀ [k,m] (ld k) = op(B);
// C = w·inᵀ = (in·wᵀ)ᵀ [n,m] column-major (ld n), which is out [m,n]
// row-major.
func (be *Backend) Matmul(out, in, w, bias kernels.Buffer, m, k, n int, scale float32, accumulate bool) error {
	const op = "Matmul"
	o, err := be.buf(op, "out", out)
	if err != nil {
		return err
	}
	x, err := be.buf(op, "in", in)
	if err != nil {
		return err
	}
	wt, err := be.weight(op, w)
	if err != nil {
		return err
	}
	bs, err := be.optBuf(op, "bias", bias)
	if err != nil {
		return err
	}
	if err := checkGemmShape(op, m, k, n); err != nil {
		return err
	}
	if err := wantLen(op, "out", o, m*n, "m*n"); err != nil {
		return err
	}
	if err := wantLen(op, "in", x, m*k, "m*k"); err != nil {
		return err
	}
	if err := wantLen(op, "w", wt, n*k, "n*k"); err != nil {
		return err
	}
	if bs != nil {
		if err := wantLen(op, "bias", bs, n, "n"); err != nil {
			return err
		}
	}
	if o.overlaps(x) || o.overlaps(wt) || o.overlaps(bs) {
		return fmt.Errorf("cuda: %s: out overlaps in, w or bias", op)
	}
	if m == 0 || n == 0 {
		return nil
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	// A bf16 weight (frozen base weights stored in bf16) multiplies a bf16
	// copy of in: cuBLAS has no mixed bf16×f32 GEMM.
	wBF16 := wt.a.dt == kernels.BF16
	xa := x.ptr()
	if wBF16 && k > 0 {
		if xa, err = be.toBF16(op, x); err != nil {
			return err
		}
	}
	if k == 0 {
		// Nothing to multiply (cuBLAS would reject lda = 0): out = beta·out.
		if !accumulate {
			if err := be.Zero(o); err != nil {
				return fmt.Errorf("cuda: %s: %w", op, err)
			}
		}
	} else if err := be.sgemmRowMajor(op, false, true, m, n, k, scale, xa, k, wt.ptr(), k, beta, o.ptr(), n, wBF16); err != nil {
		return err
	}
	if bs == nil {
		return nil
	}
	return be.launch(op, "pt_bias_add", grid1(m*n), block1, 0, argP(o.ptr()), argP(bs.ptr()), argL(int64(m)), argI(n))
}

// MatmulBackward adds, for out = scale·in·wᵀ + bias:
//
//	dIn[m,k] += scale·dOut[m,n]·w[n,k]:
//	  sgemmRowMajor(NoTrans, NoTrans, M=m, N=k, K=n, dOut, n, w, k, 1, dIn, k)
//	  = cublasSgemm(OP_N, OP_N, k, m, n, scale, A=w, k, B=dOut, n, 1, C=dIn, k)
//	  (column-major: dInᵀ[k,m] = wᵀ[k,n]·dOutᵀ[n,m])
//	dW[n,k]  += scale·dOut[m,n]ᵀ·in[m,k]:
//	  sgemmRowMajor(Trans, NoTrans, M=n, N=k, K=m, dOut, n, in, k, 1, dW, k)
//	  = cublasSgemm(OP_N, OP_T, k, n, m, scale, A=in, k, B=dOut, n, 1, C=dW, k)
//	  (column-major: dWᵀ[k,n] = inᵀ[k,m]·dOut[m,n])
//	dBias[n] += Σ_m dOut[m,n]: column sums (pt_col_sums, float64)
//
// Each nil gradient output is skipped, and then its operand may be nil too.
func (be *Backend) MatmulBackward(dIn, dW, dBias, dOut, in, w kernels.Buffer, m, k, n int, scale float32) error {
	const op = "MatmulBackward"
	if err := checkGemmShape(op, m, k, n); err != nil {
		return err
	}
	do, err := be.buf(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if err := wantLen(op, "dOut", do, m*n, "m*n"); err != nil {
		return err
	}
	di, err := be.optBuf(op, "dIn", dIn)
	if err != nil {
		return err
	}
	dw, err := be.optBuf(op, "dW", dW)
	if err != nil {
		return err
	}
	db, err := be.optBuf(op, "dBias", dBias)
	if err != nil {
		return err
	}
	var x, wt *Buffer
	if di != nil {
		if err := wantLen(op, "dIn", di, m*k, "m*k"); err != nil {
			return err
		}
		if wt, err = be.weight(op, w); err != nil {
			return err
		}
		if err := wantLen(op, "w", wt, n*k, "n*k"); err != nil {
			return err
		}
		if di.overlaps(do) || di.overlaps(wt) {
			return fmt.Errorf("cuda: %s: dIn overlaps dOut or w", op)
		}
	}
	if dw != nil {
		if err := wantLen(op, "dW", dw, n*k, "n*k"); err != nil {
			return err
		}
		if x, err = be.buf(op, "in (needed for dW)", in); err != nil {
			return err
		}
		if err := wantLen(op, "in", x, m*k, "m*k"); err != nil {
			return err
		}
		if dw.overlaps(do) || dw.overlaps(x) {
			return fmt.Errorf("cuda: %s: dW overlaps dOut or in", op)
		}
	}
	if db != nil {
		if err := wantLen(op, "dBias", db, n, "n"); err != nil {
			return err
		}
		if db.overlaps(do) {
			return fmt.Errorf("cuda: %s: dBias overlaps dOut", op)
		}
	}
	if di != nil {
		wBF16 := wt.a.dt == kernels.BF16
		dOutA := do.ptr()
		if wBF16 && n > 0 {
			if dOutA, err = be.toBF16(op, do); err != nil {
				return err
			}
		}
		if err := be.sgemmRowMajor(op, false, false, m, k, n, scale, dOutA, n, wt.ptr(), k, 1, di.ptr(), k, wBF16); err != nil {
			return err
		}
	}
	if dw != nil {
		if err := be.sgemmRowMajor(op, true, false, n, k, m, scale, do.ptr(), n, x.ptr(), k, 1, dw.ptr(), k, false); err != nil {
			return err
		}
	}
	if db != nil {
		return be.launch(op, "pt_col_sums", grid1(n), block1, 0, argP(db.ptr()), argP(do.ptr()), argI(m), argI(n))
	}
	return nil
}

// weight resolves a Matmul weight: float32, or bfloat16 for a frozen base
// weight stored at half the memory (its gradient dW, if any, is float32).
func (be *Backend) weight(op string, w kernels.Buffer) (*Buffer, error) {
	return be.anyBuf(op, "w", w)
}

// toBF16 converts a float32 buffer into the bf16 scratch (round to nearest
// even) and returns the scratch's address. The scratch is reused by the
// next call; stream order keeps the GEMM that reads it before that.
func (be *Backend) toBF16(op string, x *Buffer) (uint64, error) {
	p, err := be.half.ensure(be.g, 2*x.n)
	if err != nil {
		return 0, fmt.Errorf("cuda: %s: bf16 scratch: %w", op, err)
	}
	if err := be.launch(op, "pt_cvt_f32_to_bf16", grid1(x.n), block1, 0, argP(p), argP(x.ptr()), argL(int64(x.n))); err != nil {
		return 0, err
	}
	return p, nil
}
