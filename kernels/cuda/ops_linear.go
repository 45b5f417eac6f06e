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

// Embedding gathers out[i, :] = table[tokens[i], :]. The table may be
// bf16 (frozen base embeddings), read by the gather itself; a bf16 out from a
// float32 table is staged (mixed.go).
func (be *Backend) Embedding(out, table kernels.Buffer, tokens []int32, vocab, dim int) error {
	const op = "Embedding"
	o, err := be.anyBuf(op, "out", out)
	if err != nil {
		return err
	}
	tb, err := be.anyBuf(op, "table", table)
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
	kernel := "pt_embedding"
	switch {
	case tb.a.dt == kernels.BF16 && o.a.dt == kernels.BF16:
		kernel = "pt_embedding_bf16_bf16"
	case tb.a.dt == kernels.BF16:
		kernel = "pt_embedding_bf16"
	case o.a.dt == kernels.BF16:
		return be.mixed(op, []mArg{{"out", out, roleOut}, {"table", table, roleAsIs}},
			func(x []kernels.Buffer) error { return be.Embedding(x[0], x[1], tokens, vocab, dim) })
	}
	tok, err := be.uploadInts(op, tokens)
	if err != nil {
		return err
	}
	return be.launch(op, kernel, grid1(o.n), block1, 0,
		argP(o.ptr()), argP(tb.ptr()), argP(tok), argL(int64(len(tokens))), argI(dim))
}

// EmbeddingBackward adds dTable[tokens[i], :] += dOut[i, :] (nil dTable:
// a frozen embedding, nothing to do once the arguments check out). bf16
// arguments are staged (mixed.go).
func (be *Backend) EmbeddingBackward(dTable, dOut kernels.Buffer, tokens []int32, vocab, dim int) error {
	return be.mixed("EmbeddingBackward", []mArg{{"dTable", dTable, roleAcc}, {"dOut", dOut, roleIn}},
		func(x []kernels.Buffer) error { return be.embeddingBackwardF32(x[0], x[1], tokens, vocab, dim) })
}

func (be *Backend) embeddingBackwardF32(dTable, dOut kernels.Buffer, tokens []int32, vocab, dim int) error {
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
//
// dtypes: when in or w is bf16 the GEMM runs on bf16 tensor cores with
// float32 accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F); the other
// operand, if float32, is rounded to a bf16 copy first (cuBLAS has no mixed
// bf16×f32 GEMM). out is float32 or bf16 (cuBLAS rounds C once, after
// adding beta·C in float32). A bf16 out from float32 operands, or with a
// bias, is staged through float32 (mixed.go).
func (be *Backend) Matmul(out, in, w, bias kernels.Buffer, m, k, n int, scale float32, accumulate bool) error {
	const op = "Matmul"
	o, err := be.anyBuf(op, "out", out)
	if err != nil {
		return err
	}
	x, err := be.anyBuf(op, "in", in)
	if err != nil {
		return err
	}
	wt, err := be.anyBuf(op, "w", w)
	if err != nil {
		return err
	}
	var bs *Buffer
	if !isNilBuffer(bias) {
		if bs, err = be.anyBuf(op, "bias", bias); err != nil {
			return err
		}
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
	bf := x.a.dt == kernels.BF16 || wt.a.dt == kernels.BF16
	outBF := o.a.dt == kernels.BF16
	if (bs != nil && bs.a.dt == kernels.BF16) || (outBF && (bs != nil || !bf)) {
		r := roleOut
		if accumulate {
			r = roleAcc
		}
		return be.mixed(op, []mArg{{"out", out, r}, {"bias", bias, roleIn}, {"in", in, roleAsIs}, {"w", w, roleAsIs}},
			func(b []kernels.Buffer) error { return be.Matmul(b[0], in, w, b[1], m, k, n, scale, accumulate) })
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	if k == 0 {
		// Nothing to multiply (cuBLAS would reject lda = 0): out = beta·out.
		if !accumulate {
			if err := be.Zero(o); err != nil {
				return fmt.Errorf("cuda: %s: %w", op, err)
			}
		}
	} else {
		xa, wa := x.ptr(), wt.ptr()
		if bf {
			if xa, err = be.bf16Operand(op, 0, x); err != nil {
				return err
			}
			if wa, err = be.bf16Operand(op, 1, wt); err != nil {
				return err
			}
		}
		if err := be.sgemmRowMajor(op, false, true, m, n, k, scale, xa, k, wa, k, beta, o.ptr(), n, bf, outBF); err != nil {
			return err
		}
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
// dtypes as in Matmul: a GEMM with a bf16 operand runs in bf16 with float32
// accumulation into the (float32) gradient, after rounding its float32
// operand (dOut, made once and used by both GEMMs) to bf16. bf16 gradient
// outputs, and a bf16 dOut with dBias, are staged through float32.
func (be *Backend) MatmulBackward(dIn, dW, dBias, dOut, in, w kernels.Buffer, m, k, n int, scale float32) error {
	const op = "MatmulBackward"
	if err := checkGemmShape(op, m, k, n); err != nil {
		return err
	}
	do, err := be.anyBuf(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if err := wantLen(op, "dOut", do, m*n, "m*n"); err != nil {
		return err
	}
	var di, dw, db *Buffer
	for _, g := range []struct {
		name string
		b    kernels.Buffer
		to   **Buffer
	}{{"dIn", dIn, &di}, {"dW", dW, &dw}, {"dBias", dBias, &db}} {
		if isNilBuffer(g.b) {
			continue
		}
		if *g.to, err = be.anyBuf(op, g.name, g.b); err != nil {
			return err
		}
	}
	var x, wt *Buffer
	if di != nil {
		if err := wantLen(op, "dIn", di, m*k, "m*k"); err != nil {
			return err
		}
		if wt, err = be.anyBuf(op, "w", w); err != nil {
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
		if x, err = be.anyBuf(op, "in (needed for dW)", in); err != nil {
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
	if m == 0 || k == 0 || n == 0 {
		return nil // every gradient is empty or an empty sum
	}
	is16 := func(b *Buffer) bool { return b != nil && b.a.dt == kernels.BF16 }
	if is16(di) || is16(dw) || is16(db) || (db != nil && is16(do)) {
		dOutRole := roleAsIs
		if db != nil {
			dOutRole = roleIn
		}
		return be.mixed(op, []mArg{{"dIn", dIn, roleAcc}, {"dW", dW, roleAcc}, {"dBias", dBias, roleAcc},
			{"dOut", dOut, dOutRole}, {"in", in, roleAsIs}, {"w", w, roleAsIs}},
			func(b []kernels.Buffer) error {
				return be.MatmulBackward(b[0], b[1], b[2], b[3], in, w, m, k, n, scale)
			})
	}
	// dOut as the GEMMs read it: float32, or a bf16 copy made at most once.
	dOutBF := uint64(0)
	dOutFor := func(bf bool) (uint64, error) {
		if !bf {
			return do.ptr(), nil
		}
		if dOutBF == 0 {
			p, err := be.bf16Operand(op, 0, do)
			if err != nil {
				return 0, err
			}
			dOutBF = p
		}
		return dOutBF, nil
	}
	if di != nil && n > 0 {
		bf := is16(do) || is16(wt)
		da, err := dOutFor(bf)
		if err != nil {
			return err
		}
		wa := wt.ptr()
		if bf {
			if wa, err = be.bf16Operand(op, 1, wt); err != nil {
				return err
			}
		}
		if err := be.sgemmRowMajor(op, false, false, m, k, n, scale, da, n, wa, k, 1, di.ptr(), k, bf, false); err != nil {
			return err
		}
	}
	if dw != nil && m > 0 {
		bf := is16(do) || is16(x)
		da, err := dOutFor(bf)
		if err != nil {
			return err
		}
		xa := x.ptr()
		if bf {
			if xa, err = be.bf16Operand(op, 1, x); err != nil {
				return err
			}
		}
		if err := be.sgemmRowMajor(op, true, false, n, k, m, scale, da, n, xa, k, 1, dw.ptr(), k, bf, false); err != nil {
			return err
		}
	}
	if db != nil {
		return be.launch(op, "pt_col_sums", grid1(n), block1, 0, argP(db.ptr()), argP(do.ptr()), argI(m), argI(n))
	}
	return nil
}
