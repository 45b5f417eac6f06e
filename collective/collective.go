package collective

import (
	"context"
	"errors"
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// Op is the reduction an AllReduce applies elementwise.
type Op int

const (
	// Sum adds the ranks' buffers.
	Sum Op = iota
	// Avg is Sum followed by scaling every element by float32(1/Size) on each
	// rank (a multiply, not a divide, so it matches kernels.Backend.Scale and
	// NCCL's pre/post-scaling within float rounding). Every rank scales the
	// same summed bits by the same factor, so replicas stay bit-identical.
	Avg
)

// String names the op, for logs and errors.
func (o Op) String() string {
	switch o {
	case Sum:
		return "sum"
	case Avg:
		return "avg"
	}
	return fmt.Sprintf("op(%d)", int(o))
}

// Valid reports whether o is a known op.
func (o Op) Valid() bool { return o == Sum || o == Avg }

// Communicator runs in-place collectives on one flat buffer among the ranks
// of a world. See the package documentation for the rules every
// implementation follows (ordering, cancellation, failure, Close).
type Communicator interface {
	// Rank is this rank's index in [0, Size).
	Rank() int
	// Size is the number of ranks in the world.
	Size() int
	// AllReduce replaces buf, on every rank, with the elementwise reduction
	// (op) of all ranks' buf. All ranks end with bit-identical contents.
	AllReduce(ctx context.Context, buf kernels.Buffer, op Op) error
	// Broadcast replaces buf, on every rank, with root's buf.
	Broadcast(ctx context.Context, buf kernels.Buffer, root int) error
	// Close releases the connections. It aborts an operation in flight (which
	// then returns an error), is idempotent, and never blocks forever.
	Close() error
}

// Errors callers test with errors.Is. Implementations wrap them with context
// (which rank, which operation, the underlying I/O error).
var (
	// ErrPeerLost: a peer died or a connection broke, so this world cannot
	// finish the operation. The trainer's answer is to form a new world.
	ErrPeerLost = errors.New("collective: peer lost")
	// ErrAborted: this rank's operation was cancelled or hit its deadline.
	// It is wrapped together with the context's error (context.Canceled or
	// context.DeadlineExceeded), so errors.Is works with either.
	ErrAborted = errors.New("collective: operation aborted")
	// ErrClosed: the Communicator was closed (possibly while an operation was
	// in flight).
	ErrClosed = errors.New("collective: communicator closed")
	// ErrUnsupportedBuffer: the buffer's type or dtype is not one this
	// Communicator can move (for example a GPU buffer given to the TCP ring).
	ErrUnsupportedBuffer = errors.New("collective: unsupported buffer")
)
