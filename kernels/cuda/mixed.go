package cuda

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// Mixed precision.
//
// Every op accepts BF16 buffers in any position, which is what bf16
// training needs: activations and frozen base weights stored in bfloat16
// (half the memory), gradients, optimizer state and the float32 master copy
// of the trainable parameters in float32. The GEMMs, which carry almost all
// of a step's FLOPs, read bf16 natively on tensor cores (cublasGemmEx with
// CUDA_R_16BF operands, float32 accumulation; see Matmul), and so does
// Embedding's gather. The memory-bound ops of every layer (Add, RMSNorm,
// RoPE, SwiGLU, Dropout and their backward passes) read and write bf16
// themselves (roleAsIs; their kernels take a dtype mask, see dtMask and
// pt_ld in common.cuh) and compute in float32. Every other op (attention,
// cross-entropy, AdamW, and the float32-only arguments of the ops above)
// has its bf16 arguments staged through float32 scratch,
// widened exactly before the op and rounded to nearest even after it. Either
// way an op's result on bf16 buffers is, bit for bit, its float32 result on
// the bf16 values, rounded once when stored; staging costs extra passes over
// memory, so the ops that move the most bytes are the native ones.
//
// A bf16 argument may alias another argument only exactly (the same view):
// the two then share one staged copy, so in-place ops (RoPE, CrossEntropy
// over its logits) keep working.

// role says how an op uses a buffer argument, which decides what staging
// does with a bf16 one.
type role uint8

const (
	roleIn   role = iota // read: widened to float32 before the op
	roleOut              // overwritten in full: rounded back after the op
	roleAcc              // read and written (gradients added into, in-place updates)
	roleAsIs             // passed through untouched (the op reads bf16 itself)
)

// mArg is one buffer argument of a staged op.
type mArg struct {
	name string
	buf  kernels.Buffer
	role role
}

// isNilBuffer reports a missing optional argument (a nil interface or a nil
// *Buffer).
func isNilBuffer(b kernels.Buffer) bool {
	if b == nil {
		return true
	}
	cb, ok := b.(*Buffer)
	return ok && cb == nil
}

func isBF16(b kernels.Buffer) bool {
	cb, ok := b.(*Buffer)
	return ok && cb != nil && cb.a.dt == kernels.BF16
}

// mixed runs f, an op's float32 implementation, on args, staging each bf16
// argument (other than roleAsIs ones) through float32 scratch. Without a
// bf16 argument it calls f on args as they are. f receives the buffers in
// args' order (nil stays nil). f must write every element of a roleOut
// argument when it returns nil (every op's outputs are defined in full).
func (be *Backend) mixed(op string, args []mArg, f func(b []kernels.Buffer) error) error {
	bufs := make([]kernels.Buffer, len(args))
	any16 := false
	for i, a := range args {
		bufs[i] = a.buf
		if isBF16(a.buf) {
			any16 = true // staged, or read as bf16 by the op: aliasing is checked below
		}
	}
	if !any16 {
		return f(bufs)
	}
	res := make([]*Buffer, len(args))
	for i, a := range args {
		if isNilBuffer(a.buf) {
			bufs[i] = nil
			continue
		}
		cb, err := be.anyBuf(op, a.name, a.buf)
		if err != nil {
			return err
		}
		res[i] = cb
	}
	for i, x := range res {
		if x == nil || x.a.dt != kernels.BF16 {
			continue
		}
		for j, y := range res {
			if j != i && y != nil && x.overlaps(y) && !x.same(y) {
				return fmt.Errorf("cuda: %s: %s (bf16) partly overlaps %s; a bf16 argument may alias another only exactly", op, args[i].name, args[j].name)
			}
		}
	}
	type staged struct {
		orig, tmp *Buffer
		write     bool
	}
	var st []staged
	for i, x := range res {
		if x == nil || x.a.dt != kernels.BF16 || args[i].role == roleAsIs {
			continue
		}
		if x.n == 0 {
			// Nothing to convert, but f must not see bf16 (the float32
			// implementations refuse it; MatmulBackward would stage again).
			bufs[i] = &Buffer{a: &allocation{be: be, dt: kernels.F32}}
			continue
		}
		k := -1
		for s := range st {
			if st[s].orig.same(x) {
				k = s
			}
		}
		if k < 0 {
			tmp, err := be.stageBuffer(op, len(st), x.n)
			if err != nil {
				return err
			}
			read := false
			for j, y := range res {
				if y != nil && y.same(x) && (args[j].role == roleIn || args[j].role == roleAcc) {
					read = true
				}
			}
			if read {
				if err := be.launch(op, "pt_cvt_bf16_to_f32", grid1(x.n), block1, 0, argP(tmp.ptr()), argP(x.ptr()), argL(int64(x.n))); err != nil {
					return err
				}
			}
			st = append(st, staged{orig: x, tmp: tmp})
			k = len(st) - 1
		}
		if args[i].role != roleIn {
			st[k].write = true
		}
		bufs[i] = st[k].tmp
	}
	if err := f(bufs); err != nil {
		return err
	}
	for _, s := range st {
		if s.write {
			if err := be.launch(op, "pt_cvt_f32_to_bf16", grid1(s.orig.n), block1, 0, argP(s.orig.ptr()), argP(s.tmp.ptr()), argL(int64(s.orig.n))); err != nil {
				return err
			}
		}
	}
	return nil
}

// stageBuffer returns a float32 view of n elements over staging slot i.
// Slots are reused by the next op: the stream runs ops in issue order, so
// an op's conversions back to bf16 have read a slot before the next op's
// conversions overwrite it.
func (be *Backend) stageBuffer(op string, slot, n int) (*Buffer, error) {
	for len(be.stage) <= slot {
		be.stage = append(be.stage, scratch{})
	}
	p, err := be.stage[slot].ensure(be.g, 4*n)
	if err != nil {
		return nil, fmt.Errorf("cuda: %s: float32 staging of a bf16 argument (%d elements): %w", op, n, err)
	}
	a := &allocation{be: be, ptr: p, n: n, dt: kernels.F32}
	return &Buffer{a: a, n: n}, nil
}

// bf16Operand returns the address of x in bfloat16: x itself when it is
// bf16, else a rounded copy in GEMM-operand scratch slot (0 or 1). A slot
// is reused by the next conversion into it; stream order keeps the GEMM
// that reads it before that.
func (be *Backend) bf16Operand(op string, slot int, x *Buffer) (uint64, error) {
	if x.a.dt == kernels.BF16 {
		return x.ptr(), nil
	}
	p, err := be.half[slot].ensure(be.g, 2*x.n)
	if err != nil {
		return 0, fmt.Errorf("cuda: %s: bf16 copy of a GEMM operand (%d elements): %w", op, x.n, err)
	}
	if err := be.launch(op, "pt_cvt_f32_to_bf16", grid1(x.n), block1, 0, argP(p), argP(x.ptr()), argL(int64(x.n))); err != nil {
		return 0, err
	}
	return p, nil
}

// The ops below run in float32, with their bf16 arguments either read by
// the kernel itself (roleAsIs) or staged (see mixed). Their implementations
// are the lower-case methods of the same name.

// Add computes out = a + b (out may alias a or b). Reads and writes bf16
// natively.
func (be *Backend) Add(out, a, b kernels.Buffer) error {
	return be.mixed("Add", []mArg{{"out", out, roleAsIs}, {"a", a, roleAsIs}, {"b", b, roleAsIs}},
		func(x []kernels.Buffer) error { return be.add(x[0], x[1], x[2]) })
}

// Scale computes b *= s.
func (be *Backend) Scale(b kernels.Buffer, s float32) error {
	return be.mixed("Scale", []mArg{{"b", b, roleAcc}},
		func(x []kernels.Buffer) error { return be.scaleF32(x[0], s) })
}

// SwiGLU computes out = silu(gate) * up. Reads and writes bf16 natively.
func (be *Backend) SwiGLU(out, gate, up kernels.Buffer) error {
	return be.mixed("SwiGLU", []mArg{{"out", out, roleAsIs}, {"gate", gate, roleAsIs}, {"up", up, roleAsIs}},
		func(x []kernels.Buffer) error { return be.swiGLU(x[0], x[1], x[2]) })
}

// SwiGLUBackward adds the gradients w.r.t. gate and up (either may be nil).
// Reads and writes bf16 natively.
func (be *Backend) SwiGLUBackward(dGate, dUp, dOut, gate, up kernels.Buffer) error {
	return be.mixed("SwiGLUBackward", []mArg{{"dGate", dGate, roleAsIs}, {"dUp", dUp, roleAsIs}, {"dOut", dOut, roleAsIs}, {"gate", gate, roleAsIs}, {"up", up, roleAsIs}},
		func(x []kernels.Buffer) error { return be.swiGLUBackward(x[0], x[1], x[2], x[3], x[4]) })
}

// Dropout computes out = in·mask/(1−p) with the CPU backend's mask; p == 0
// is a copy. Reads and writes bf16 natively.
func (be *Backend) Dropout(out, in kernels.Buffer, p float32, seed uint64) error {
	return be.mixed("Dropout", []mArg{{"out", out, roleAsIs}, {"in", in, roleAsIs}},
		func(x []kernels.Buffer) error { return be.dropout(x[0], x[1], p, seed) })
}

// DropoutBackward adds dOut·mask/(1−p) into dIn (nil dIn: nothing to do).
// Reads and writes bf16 natively.
func (be *Backend) DropoutBackward(dIn, dOut kernels.Buffer, p float32, seed uint64) error {
	return be.mixed("DropoutBackward", []mArg{{"dIn", dIn, roleAsIs}, {"dOut", dOut, roleAsIs}},
		func(x []kernels.Buffer) error { return be.dropoutBackward(x[0], x[1], p, seed) })
}

// AdamW updates params in place (decoupled weight decay), fused. Training
// keeps params, m and v in float32 (bf16 optimizer state loses small
// updates); bf16 buffers work, through staging.
func (be *Backend) AdamW(params, grads, m, v kernels.Buffer, p kernels.AdamWParams) error {
	return be.mixed("AdamW", []mArg{{"params", params, roleAcc}, {"grads", grads, roleIn}, {"m", m, roleAcc}, {"v", v, roleAcc}},
		func(x []kernels.Buffer) error { return be.adamWF32(x[0], x[1], x[2], x[3], p) })
}

// SumSquares writes Σ in[i]² into out[0], accumulated in float64.
func (be *Backend) SumSquares(out, in kernels.Buffer) error {
	// out is roleAcc: only out[0] is written, the rest must survive.
	return be.mixed("SumSquares", []mArg{{"out", out, roleAcc}, {"in", in, roleIn}},
		func(x []kernels.Buffer) error { return be.sumSquaresF32(x[0], x[1]) })
}

// RMSNorm computes rstd[r] = 1/sqrt(mean(in[r,:]²) + eps) and
// out[r,:] = in[r,:]·rstd[r]·weight. out may alias in. out, in and
// weight are read and written as bf16 natively; a bf16 rstd is staged.
func (be *Backend) RMSNorm(out, rstd, in, weight kernels.Buffer, rows, dim int, eps float32) error {
	return be.mixed("RMSNorm", []mArg{{"out", out, roleAsIs}, {"rstd", rstd, roleOut}, {"in", in, roleAsIs}, {"weight", weight, roleAsIs}},
		func(x []kernels.Buffer) error { return be.rmsNorm(x[0], x[1], x[2], x[3], rows, dim, eps) })
}

// RMSNormBackward adds the gradients w.r.t. in and weight (either may be
// nil). dWeight is computed first, so dIn may alias in or dOut. dIn, dOut,
// in and weight are read and written as bf16 natively; a bf16 dWeight or
// rstd is staged.
func (be *Backend) RMSNormBackward(dIn, dWeight, dOut, in, weight, rstd kernels.Buffer, rows, dim int) error {
	return be.mixed("RMSNormBackward", []mArg{{"dIn", dIn, roleAsIs}, {"dWeight", dWeight, roleAcc}, {"dOut", dOut, roleAsIs}, {"in", in, roleAsIs}, {"weight", weight, roleAsIs}, {"rstd", rstd, roleIn}},
		func(x []kernels.Buffer) error {
			return be.rmsNormBackward(x[0], x[1], x[2], x[3], x[4], x[5], rows, dim)
		})
}

// RoPE rotates each head by its row's position (rotate-half); out may
// alias in. Reads and writes bf16 natively.
func (be *Backend) RoPE(out, in kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	return be.mixed("RoPE", []mArg{{"out", out, roleAsIs}, {"in", in, roleAsIs}},
		func(x []kernels.Buffer) error {
			return be.ropeForward(x[0], x[1], positions, rows, heads, headDim, theta)
		})
}

// RoPEBackward adds the inverse rotation of dOut into dIn. Reads and writes
// bf16 natively.
func (be *Backend) RoPEBackward(dIn, dOut kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	return be.mixed("RoPEBackward", []mArg{{"dIn", dIn, roleAsIs}, {"dOut", dOut, roleAsIs}},
		func(x []kernels.Buffer) error {
			return be.ropeBackward(x[0], x[1], positions, rows, heads, headDim, theta)
		})
}

// Attention is causal grouped-query attention, flash-attention style
// (src/attention.cu): out and lse, no [seq, seq] matrix.
func (be *Backend) Attention(out, lse, q, k, v kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
	return be.mixed("Attention", []mArg{{"out", out, roleOut}, {"lse", lse, roleOut}, {"q", q, roleIn}, {"k", k, roleIn}, {"v", v, roleIn}},
		func(x []kernels.Buffer) error {
			return be.attentionF32(x[0], x[1], x[2], x[3], x[4], batch, seq, heads, kvHeads, headDim)
		})
}

// AttentionBackward adds into dq, dk, dv (each may be nil); see
// attentionBackwardF32.
func (be *Backend) AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
	return be.mixed("AttentionBackward", []mArg{{"dq", dq, roleAcc}, {"dk", dk, roleAcc}, {"dv", dv, roleAcc},
		{"dOut", dOut, roleIn}, {"q", q, roleIn}, {"k", k, roleIn}, {"v", v, roleIn}, {"out", out, roleIn}, {"lse", lse, roleIn}},
		func(x []kernels.Buffer) error {
			return be.attentionBackwardF32(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], batch, seq, heads, kvHeads, headDim)
		})
}

// CrossEntropy is softmax cross-entropy fused with its gradient, one block
// per row (src/cross_entropy.cu). dlogits is overwritten and may alias
// logits exactly; nil dlogits computes the losses only.
func (be *Backend) CrossEntropy(losses, dlogits, logits kernels.Buffer, targets []int32, rows, vocab int, gradScale float32) error {
	return be.mixed("CrossEntropy", []mArg{{"losses", losses, roleOut}, {"dlogits", dlogits, roleOut}, {"logits", logits, roleIn}},
		func(x []kernels.Buffer) error {
			return be.crossEntropyF32(x[0], x[1], x[2], targets, rows, vocab, gradScale)
		})
}
