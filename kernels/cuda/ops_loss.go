package cuda

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// crossEntropyF32 is CrossEntropy on float32 buffers: softmax cross-entropy fused with its gradient, one block
// per row (src/cross_entropy.cu). dlogits is overwritten and may alias
// logits exactly; nil dlogits computes the losses only.
func (be *Backend) crossEntropyF32(losses, dlogits, logits kernels.Buffer, targets []int32, rows, vocab int, gradScale float32) error {
	const op = "CrossEntropy"
	ls, err := be.buf(op, "losses", losses)
	if err != nil {
		return err
	}
	x, err := be.buf(op, "logits", logits)
	if err != nil {
		return err
	}
	dl, err := be.optBuf(op, "dlogits", dlogits)
	if err != nil {
		return err
	}
	n, err := numel(op, "rows, vocab", rows, vocab)
	if err != nil {
		return err
	}
	if err := fitInt32(op, "rows, vocab", rows, vocab); err != nil {
		return err
	}
	if err := wantLen(op, "logits", x, n, "rows*vocab"); err != nil {
		return err
	}
	if err := wantLen(op, "losses", ls, rows, "rows"); err != nil {
		return err
	}
	if len(targets) != rows {
		return fmt.Errorf("cuda: %s: len(targets) = %d, want rows=%d", op, len(targets), rows)
	}
	if dl != nil {
		if err := wantLen(op, "dlogits", dl, n, "rows*vocab"); err != nil {
			return err
		}
		if dl.overlaps(x) && !dl.same(x) {
			return fmt.Errorf("cuda: %s: dlogits partly overlaps logits (it may alias them exactly or not at all)", op)
		}
		if dl.overlaps(ls) {
			return fmt.Errorf("cuda: %s: dlogits overlaps losses", op)
		}
	}
	if ls.overlaps(x) {
		return fmt.Errorf("cuda: %s: losses overlaps logits", op)
	}
	for r, t := range targets {
		if t != kernels.IgnoreIndex && (t < 0 || int(t) >= vocab) {
			return fmt.Errorf("cuda: %s: targets[%d] = %d outside [0, vocab=%d) and not IgnoreIndex (%d)",
				op, r, t, vocab, kernels.IgnoreIndex)
		}
	}
	if rows == 0 {
		return nil
	}
	tg, err := be.uploadInts(op, targets)
	if err != nil {
		return err
	}
	return be.launch(op, "pt_cross_entropy", rowsGrid(rows), [3]uint32{normBlock, 1, 1}, 0,
		argP(ls.ptr()), argP(dl.ptr()), argP(x.ptr()), argP(tg), argI(rows), argI(vocab), argF(gradScale))
}
