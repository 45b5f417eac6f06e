package cuda

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// These mirror PT_AT_WARPS, PT_AT_TILE and PT_AT_MAXR in src/attention.cu.
const (
	attnWarps   = 8  // rows per block
	attnTile    = 32 // keys (or queries) per shared-memory tile
	attnMaxHead = 32 * 8
)

// attnShape holds the checked sizes of an attention call.
type attnShape struct {
	batch, seq, heads, kvHeads, headDim int
	scale                               float32
}

func checkAttention(op string, batch, seq, heads, kvHeads, headDim int) (attnShape, error) {
	if heads <= 0 || kvHeads <= 0 || headDim <= 0 || batch < 0 || seq < 0 {
		return attnShape{}, fmt.Errorf("cuda: %s: batch=%d seq=%d heads=%d kvHeads=%d headDim=%d: sizes must be positive",
			op, batch, seq, heads, kvHeads, headDim)
	}
	if heads%kvHeads != 0 {
		return attnShape{}, fmt.Errorf("cuda: %s: heads=%d is not a multiple of kvHeads=%d", op, heads, kvHeads)
	}
	if headDim > attnMaxHead {
		return attnShape{}, fmt.Errorf("cuda: %s: headDim=%d: the CUDA attention kernels support headDim <= %d", op, headDim, attnMaxHead)
	}
	if _, err := numel(op, "batch, seq, heads, headDim", batch, seq, heads, headDim); err != nil {
		return attnShape{}, err
	}
	// Grid limits: y = heads (or kvHeads) and z = batch are at most 65535.
	if batch > 65535 || heads > 65535 {
		return attnShape{}, fmt.Errorf("cuda: %s: batch=%d heads=%d: each must be <= 65535", op, batch, heads)
	}
	if err := fitInt32(op, "seq", seq); err != nil {
		return attnShape{}, err
	}
	return attnShape{batch: batch, seq: seq, heads: heads, kvHeads: kvHeads, headDim: headDim,
		scale: float32(1 / math.Sqrt(float64(headDim)))}, nil
}

// attnArg is one buffer argument of an attention op with its expected size.
type attnArg struct {
	name string
	buf  kernels.Buffer
	want int
	opt  bool // a gradient output that may be nil
	out  bool // written by the op
	b    *Buffer
}

// fetchAttn resolves and checks the buffers, and rejects any output that
// overlaps another argument.
func (be *Backend) fetchAttn(op string, args []*attnArg) error {
	for _, a := range args {
		var err error
		if a.opt {
			a.b, err = be.optBuf(op, a.name, a.buf)
		} else {
			a.b, err = be.buf(op, a.name, a.buf)
		}
		if err != nil {
			return err
		}
		if a.b == nil {
			continue
		}
		shape := "batch*seq*heads*headDim"
		switch a.name {
		case "k", "v", "dk", "dv":
			shape = "batch*seq*kvHeads*headDim"
		case "lse":
			shape = "batch*heads*seq"
		}
		if err := wantLen(op, a.name, a.b, a.want, shape); err != nil {
			return err
		}
	}
	for _, a := range args {
		if !a.out || a.b == nil {
			continue
		}
		for _, c := range args {
			if a != c && a.b.overlaps(c.b) {
				return fmt.Errorf("cuda: %s: %s overlaps %s", op, a.name, c.name)
			}
		}
	}
	return nil
}

// Shared memory of the attention kernels, in bytes (see attention.cu).
func attnFwdSmem(d int) int { return 4 * (2*attnTile*(d+1) + attnWarps*d) }
func attnDQSmem(d int) int  { return 4 * (2*attnTile*(d+1) + 2*attnWarps*d) }
func attnDKVSmem(d int) int { return 4 * (2*attnTile*(d+1) + 2*attnTile + 2*attnWarps*d) }

// attentionF32 is Attention on float32 buffers: causal grouped-query attention, flash-attention style
// (src/attention.cu): out and lse, no [seq, seq] matrix.
func (be *Backend) attentionF32(out, lse, q, k, v kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
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
	if err := be.fetchAttn(op, []*attnArg{aOut, aLse, aQ, aK, aV}); err != nil {
		return err
	}
	if be.useGEMMAttention(seq) {
		return be.attentionGEMM(op, aOut.b, aLse.b, aQ.b, aK.b, aV.b, sh)
	}
	grid := [3]uint32{uint32((seq + attnWarps - 1) / attnWarps), uint32(heads), uint32(batch)}
	return be.launch(op, "pt_attention_fwd", grid, [3]uint32{32 * attnWarps, 1, 1}, attnFwdSmem(headDim),
		argP(aOut.b.ptr()), argP(aLse.b.ptr()), argP(aQ.b.ptr()), argP(aK.b.ptr()), argP(aV.b.ptr()),
		argI(seq), argI(heads), argI(kvHeads), argI(headDim), argF(sh.scale))
}

// attentionBackwardF32 is AttentionBackward on float32 buffers: adds into dq, dk, dv (each may be nil). It computes
// D = rowsum(dO∘O) into a scratch buffer, then runs the dQ pass (one warp
// per query row) and the dK/dV pass (one warp per key row); every output
// element has one writer.
func (be *Backend) attentionBackwardF32(dq, dk, dv, dOut, q, k, v, out, lse kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
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
	if err := be.fetchAttn(op, []*attnArg{aDQ, aDK, aDV, aDO, aQ, aK, aV, aO, aL}); err != nil {
		return err
	}
	if (aDQ.b == nil && aDK.b == nil && aDV.b == nil) || nq == 0 {
		return nil
	}
	rows := batch * seq * heads
	dsum, err := be.attnD.ensure(be.g, 4*rows)
	if err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	warpsPerBlock := blockSize / 32
	if err := be.launch(op, "pt_attention_dsum", [3]uint32{uint32(min((rows+warpsPerBlock-1)/warpsPerBlock, 1<<16)), 1, 1}, block1, 0,
		argP(dsum), argP(aDO.b.ptr()), argP(aO.b.ptr()), argI(batch), argI(seq), argI(heads), argI(headDim)); err != nil {
		return err
	}
	if be.useGEMMAttention(seq) {
		return be.attentionBackwardGEMM(op, aDQ.b, aDK.b, aDV.b, aDO.b, aQ.b, aK.b, aV.b, aL.b, dsum, sh)
	}
	blocks := uint32((seq + attnWarps - 1) / attnWarps)
	block := [3]uint32{32 * attnWarps, 1, 1}
	if aDQ.b != nil {
		if err := be.launch(op, "pt_attention_bwd_dq", [3]uint32{blocks, uint32(heads), uint32(batch)}, block, attnDQSmem(headDim),
			argP(aDQ.b.ptr()), argP(aDO.b.ptr()), argP(aQ.b.ptr()), argP(aK.b.ptr()), argP(aV.b.ptr()),
			argP(aL.b.ptr()), argP(dsum), argI(seq), argI(heads), argI(kvHeads), argI(headDim), argF(sh.scale)); err != nil {
			return err
		}
	}
	if aDK.b == nil && aDV.b == nil {
		return nil
	}
	return be.launch(op, "pt_attention_bwd_dkv", [3]uint32{blocks, uint32(kvHeads), uint32(batch)}, block, attnDKVSmem(headDim),
		argP(aDK.b.ptr()), argP(aDV.b.ptr()), argP(aDO.b.ptr()), argP(aQ.b.ptr()), argP(aK.b.ptr()), argP(aV.b.ptr()),
		argP(aL.b.ptr()), argP(dsum), argI(seq), argI(heads), argI(kvHeads), argI(headDim), argF(sh.scale))
}
