package cuda

import (
	"fmt"
	"os"
)

// Attention through GEMMs. The flash-style kernels of attention.cu compute
// scores on the CUDA cores in float32; at training lengths the scores are
// most of a step's attention FLOPs, and tensor cores do them an order of
// magnitude faster. This path makes the scores of a batch of heads with
// cublasGemmStridedBatchedEx (TF32 when the backend runs float32 GEMMs in
// TF32), applies the causal softmax with attention_gemm.cu, and multiplies
// the probabilities by V the same way; the backward pass recomputes the
// probabilities from the saved lse (nothing of size [T, T] is kept between
// the passes), exactly as the flash kernels do. The [E, T, T] score buffers
// are scratch bounded by attnScoresBudget: E heads at a time.
//
// For head h = kv*g + j of batch b (g = heads/kvHeads), with Q_bh [T, D]
// at q + ((b*T)*H + h)*D and row stride H*D, K_bkv and V_bkv likewise with
// KVH, and row-major products mapped to cuBLAS as sgemmRowMajor explains:
//
//	S  = scale·Q·Kᵀ   cublas(T, N, m=T, n=T, k=D, A=K, lda=KVH·D, B=Q,  ldb=H·D, C=S,  ldc=T)
//	O  = P·V          cublas(N, N, m=D, n=T, k=T, A=V, lda=KVH·D, B=P,  ldb=T,   C=O,  ldc=H·D)
//	dP = dO·Vᵀ        cublas(T, N, m=T, n=T, k=D, A=V, lda=KVH·D, B=dO, ldb=H·D, C=dP, ldc=T)
//	dV += Pᵀ·dO       cublas(N, T, m=D, n=T, k=T, A=dO, lda=H·D,  B=P,  ldb=T,   C=dV, ldc=KVH·D)
//	dQ += scale·dS·K  cublas(N, N, m=D, n=T, k=T, A=K, lda=KVH·D, B=dS, ldb=T,   C=dQ, ldc=H·D)
//	dK += scale·dSᵀ·Q cublas(N, T, m=D, n=T, k=T, A=Q, lda=H·D,   B=dS, ldb=T,   C=dK, ldc=KVH·D)
//
// One call covers kv heads kv0 .. kv0+E-1 for one (b, j): consecutive
// entries step K, V, dK, dV by D and Q, O, dO, dQ by g·D (the next kv head's
// j-th query head), and S by T·T. The g query heads of a kv head add into
// the same dK and dV rows, so they are separate calls in j order: every
// output has one writer per call and a fixed summation order.

// EnvAttention chooses the attention kernels: "flash", "gemm" or "auto"
// (the default: GEMMs from attnGEMMMinSeq positions on).
const EnvAttention = "PEERTUNE_CUDA_ATTENTION"

const (
	// attnGEMMMinSeq is where auto switches to GEMMs: below it the [T, T]
	// scores are small and the flash kernels' single pass wins.
	attnGEMMMinSeq = 256
	// attnScoresBudget bounds the two [E, T, T] float32 score buffers of
	// the GEMM path (at least one head's pair is always allocated).
	attnScoresBudget = 256 << 20
)

// attnMode resolves Options.Attention and EnvAttention.
func attnMode(opt string) (string, error) {
	if v := os.Getenv(EnvAttention); v != "" {
		opt = v
	}
	switch opt {
	case "", "auto":
		return "auto", nil
	case "flash", "gemm":
		return opt, nil
	}
	return "", fmt.Errorf("cuda: attention kernels %q (Options.Attention or %s): want auto, flash or gemm", opt, EnvAttention)
}

// useGEMMAttention says whether attention over seq positions runs through
// GEMMs.
func (be *Backend) useGEMMAttention(seq int) bool {
	switch be.attn {
	case "gemm":
		return true
	case "flash":
		return false
	}
	return seq >= attnGEMMMinSeq
}

// AttentionScoreHeads is how many heads' [T, T] scores the GEMM attention
// path holds at once for seq positions and kvHeads kv heads (what the
// memory estimator counts: two float32 buffers of that many heads).
func AttentionScoreHeads(seq, kvHeads int) int { return scoreHeads(seq, kvHeads, attnScoresBudget) }

func scoreHeads(seq, kvHeads, budget int) int {
	per := 2 * 4 * seq * seq
	return max(1, min(kvHeads, budget/max(per, 1)))
}

// scoreHeads is AttentionScoreHeads under this backend's budget (tests
// lower it to exercise the split into several calls).
func (be *Backend) scoreHeads(seq, kvHeads int) int {
	if be.attnBudget > 0 {
		return scoreHeads(seq, kvHeads, be.attnBudget)
	}
	return AttentionScoreHeads(seq, kvHeads)
}

// attnGemm issues one strided-batched float32 GEMM of the attention path.
func (be *Backend) attnGemm(op string, transA, transB bool, m, n, k int, alpha float32,
	a uint64, lda int, sa int, b uint64, ldb int, sb int, beta float32, c uint64, ldc int, sc int, batch int) error {
	if err := fitInt32(op, "m, n, k, lda, ldb, ldc", m, n, k, lda, ldb, ldc); err != nil {
		return err
	}
	err := be.g.gemm(gemmCall{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, tf32: be.tf32,
		batch: batch, strideA: int64(sa), strideB: int64(sb), strideC: int64(sc)})
	if err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	return nil
}

// attnScratch returns the two score buffers for E heads of T×T.
func (be *Backend) attnScratch(op string, e, T int, backward bool) (s, dp uint64, err error) {
	n := 4 * e * T * T
	if s, err = be.attnS.ensure(be.g, n); err != nil {
		return 0, 0, fmt.Errorf("cuda: %s: attention scores (%d heads × %d × %d): %w", op, e, T, T, err)
	}
	if backward {
		if dp, err = be.attnDP.ensure(be.g, n); err != nil {
			return 0, 0, fmt.Errorf("cuda: %s: attention score gradients (%d heads × %d × %d): %w", op, e, T, T, err)
		}
	}
	return s, dp, nil
}

// attnCall is one batched call of the GEMM path: kv heads kv0 .. kv0+e-1
// of batch b with query heads kv*g + j; qo and ko are the byte offsets of
// its first Q/O/dO/dQ head and of its first K/V/dK/dV head.
type attnCall struct {
	b, j, kv0, e int
	qo, ko       uint64
}

// eachAttnCall runs f for every call of the GEMM path in its fixed order
// (b, then j, then kv chunks of kc heads): the order dK and dV accumulate in.
func eachAttnCall(sh attnShape, kc int, f func(c attnCall) error) error {
	T, H, KVH, D := sh.seq, sh.heads, sh.kvHeads, sh.headDim
	g := H / KVH
	for b := 0; b < sh.batch; b++ {
		for j := 0; j < g; j++ {
			for kv0 := 0; kv0 < KVH; kv0 += kc {
				c := attnCall{b: b, j: j, kv0: kv0, e: min(kc, KVH-kv0),
					qo: 4 * uint64((b*T*H+kv0*g+j)*D), ko: 4 * uint64((b*T*KVH+kv0)*D)}
				if err := f(c); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// attentionGEMM is the forward pass through GEMMs (arguments checked).
func (be *Backend) attentionGEMM(op string, out, lse, q, k, v *Buffer, sh attnShape) error {
	T, H, KVH, D := sh.seq, sh.heads, sh.kvHeads, sh.headDim
	if sh.batch == 0 || T == 0 {
		return nil
	}
	g := H / KVH
	kc := be.scoreHeads(T, KVH)
	s, _, err := be.attnScratch(op, kc, T, false)
	if err != nil {
		return err
	}
	return eachAttnCall(sh, kc, func(c attnCall) error {
		if err := be.attnGemm(op, true, false, T, T, D, sh.scale,
			k.ptr()+c.ko, KVH*D, D, q.ptr()+c.qo, H*D, g*D, 0, s, T, T*T, c.e); err != nil {
			return err
		}
		if err := be.launch(op, "pt_attn_softmax", rowsGrid(c.e*T), block1, 0,
			argP(s), argP(lse.ptr()), argI(c.e), argI(T), argI(H), argI(c.b), argI(c.j), argI(c.kv0), argI(g)); err != nil {
			return err
		}
		return be.attnGemm(op, false, false, D, T, T, 1,
			v.ptr()+c.ko, KVH*D, D, s, T, T*T, 0, out.ptr()+c.qo, H*D, g*D, c.e)
	})
}

// attentionBackwardGEMM is the backward pass through GEMMs (arguments
// checked; dsum = rowsum(dO∘O) [B, H, T] already computed). dq, dk, dv may
// be nil.
func (be *Backend) attentionBackwardGEMM(op string, dq, dk, dv, dOut, q, k, v, lse *Buffer, dsum uint64, sh attnShape) error {
	T, H, KVH, D := sh.seq, sh.heads, sh.kvHeads, sh.headDim
	if sh.batch == 0 || T == 0 {
		return nil
	}
	g := H / KVH
	kc := be.scoreHeads(T, KVH)
	p, dp, err := be.attnScratch(op, kc, T, true)
	if err != nil {
		return err
	}
	return eachAttnCall(sh, kc, func(c attnCall) error {
		args := []kernelArg{argI(c.e), argI(T), argI(H), argI(c.b), argI(c.j), argI(c.kv0), argI(g)}
		// P from the recomputed scores and the forward pass's lse.
		if err := be.attnGemm(op, true, false, T, T, D, sh.scale,
			k.ptr()+c.ko, KVH*D, D, q.ptr()+c.qo, H*D, g*D, 0, p, T, T*T, c.e); err != nil {
			return err
		}
		if err := be.launch(op, "pt_attn_probs", grid1(c.e*T*T), block1, 0, append([]kernelArg{argP(p), argP(lse.ptr())}, args...)...); err != nil {
			return err
		}
		if dv != nil {
			if err := be.attnGemm(op, false, true, D, T, T, 1,
				dOut.ptr()+c.qo, H*D, g*D, p, T, T*T, 1, dv.ptr()+c.ko, KVH*D, D, c.e); err != nil {
				return err
			}
		}
		if dq == nil && dk == nil {
			return nil
		}
		if err := be.attnGemm(op, true, false, T, T, D, 1,
			v.ptr()+c.ko, KVH*D, D, dOut.ptr()+c.qo, H*D, g*D, 0, dp, T, T*T, c.e); err != nil {
			return err
		}
		if err := be.launch(op, "pt_attn_dscores", grid1(c.e*T*T), block1, 0, append([]kernelArg{argP(dp), argP(p), argP(dsum)}, args...)...); err != nil {
			return err
		}
		if dq != nil {
			if err := be.attnGemm(op, false, false, D, T, T, sh.scale,
				k.ptr()+c.ko, KVH*D, D, dp, T, T*T, 1, dq.ptr()+c.qo, H*D, g*D, c.e); err != nil {
				return err
			}
		}
		if dk != nil {
			return be.attnGemm(op, false, true, D, T, T, sh.scale,
				q.ptr()+c.qo, H*D, g*D, dp, T, T*T, 1, dk.ptr()+c.ko, KVH*D, D, c.e)
		}
		return nil
	})
}
