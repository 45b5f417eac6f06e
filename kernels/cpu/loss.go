package cpu

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu/internal/vmath"
)

// CrossEntropy is softmax cross-entropy fused with its gradient. Rows are
// split across goroutines; each row is handled while it is in cache: find the
// max, write e^(x−max) into dlogits while summing in float64 (the target
// logit is read first, as dlogits may alias logits), then scale to
// gradScale·(softmax − onehot). One exp per logit.
func (be *Backend) CrossEntropy(losses, dlogits, logits kernels.Buffer, targets []int32, rows, vocab int, gradScale float32) error {
	const op = "CrossEntropy"
	ls, err := host(op, "losses", losses)
	if err != nil {
		return err
	}
	x, err := host(op, "logits", logits)
	if err != nil {
		return err
	}
	dl, hasDL, err := optHost(op, "dlogits", dlogits)
	if err != nil {
		return err
	}
	n, err := numel(op, "rows, vocab", rows, vocab)
	if err != nil {
		return err
	}
	if err := wantLen(op, "logits", len(x), n, "rows*vocab"); err != nil {
		return err
	}
	if err := wantLen(op, "losses", len(ls), rows, "rows"); err != nil {
		return err
	}
	if len(targets) != rows {
		return fmt.Errorf("cpu: %s: len(targets) = %d, want rows=%d", op, len(targets), rows)
	}
	if hasDL {
		if err := wantLen(op, "dlogits", len(dl), n, "rows*vocab"); err != nil {
			return err
		}
		if overlaps(dl, x) && &dl[0] != &x[0] {
			return fmt.Errorf("cpu: %s: dlogits partly overlaps logits (it may alias them exactly or not at all)", op)
		}
		if overlaps(dl, ls) {
			return fmt.Errorf("cpu: %s: dlogits overlaps losses", op)
		}
	}
	if overlaps(ls, x) {
		return fmt.Errorf("cpu: %s: losses overlaps logits", op)
	}
	for r, t := range targets {
		if t != kernels.IgnoreIndex && (t < 0 || int(t) >= vocab) {
			return fmt.Errorf("cpu: %s: targets[%d] = %d outside [0, vocab=%d) and not IgnoreIndex (%d)",
				op, r, t, vocab, kernels.IgnoreIndex)
		}
	}
	be.parallelFor(rows, 4*vocab, func(lo, hi int) {
		var tmp []float32 // exps when there is no dlogits to hold them
		if !hasDL {
			tmp = make([]float32, vocab)
		}
		for r := lo; r < hi; r++ {
			xr := x[r*vocab : (r+1)*vocab]
			t := int(targets[r])
			var dr []float32
			if hasDL {
				dr = dl[r*vocab : (r+1)*vocab]
			}
			if t == kernels.IgnoreIndex {
				ls[r] = 0
				clear(dr)
				continue
			}
			xt := xr[t]
			mx := vmath.Max(xr)
			dst := dr
			if !hasDL {
				dst = tmp
			}
			sum := vmath.ExpShiftSum(dst, xr, mx)
			ls[r] = float32(float64(mx) + math.Log(sum) - float64(xt))
			if !hasDL {
				continue
			}
			f := float32(float64(gradScale) / sum)
			for j := range dr {
				dr[j] *= f
			}
			dr[t] -= gradScale
		}
	})
	return nil
}
