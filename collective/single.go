package collective

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/peertune/peertune/kernels"
)

// Single is the world of one rank: AllReduce (Sum and Avg alike: the average
// of one buffer is itself) and Broadcast leave the buffer as it is. It accepts
// any kernels.Buffer, host or device, because it never touches the elements.
// The zero value is ready to use. It is what a one-node run trains with, so
// the training loop has no special case for a world of one.
type Single struct {
	closed atomic.Bool
}

var _ Communicator = (*Single)(nil)

// Rank is always 0.
func (s *Single) Rank() int { return 0 }

// Size is always 1.
func (s *Single) Size() int { return 1 }

// AllReduce checks its arguments and otherwise does nothing.
func (s *Single) AllReduce(ctx context.Context, buf kernels.Buffer, op Op) error {
	if !op.Valid() {
		return fmt.Errorf("collective: single: allreduce: invalid %v", op)
	}
	if buf == nil {
		return fmt.Errorf("collective: single: allreduce: nil buffer: %w", ErrUnsupportedBuffer)
	}
	return s.check(ctx, "allreduce")
}

// Broadcast checks its arguments (root must be 0) and otherwise does nothing.
func (s *Single) Broadcast(ctx context.Context, buf kernels.Buffer, root int) error {
	if root != 0 {
		return fmt.Errorf("collective: single: broadcast: root %d out of range [0, 1)", root)
	}
	if buf == nil {
		return fmt.Errorf("collective: single: broadcast: nil buffer: %w", ErrUnsupportedBuffer)
	}
	return s.check(ctx, "broadcast")
}

// Close marks the communicator closed; later operations fail with ErrClosed.
func (s *Single) Close() error {
	s.closed.Store(true)
	return nil
}

// check reports what a real communicator would: closed, or a context that is
// already done. (A world of one has nobody to break, so it stays usable.)
func (s *Single) check(ctx context.Context, what string) error {
	if s.closed.Load() {
		return fmt.Errorf("collective: single: %s: %w", what, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("collective: single: %s: %w: %w", what, ErrAborted, err)
	}
	return nil
}
