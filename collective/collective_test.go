package collective

import (
	"context"
	"errors"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// hostBuf is a minimal host-backed kernels.HostBuffer for tests.
type hostBuf []float32

func (h hostBuf) Len() int                        { return len(h) }
func (h hostBuf) DType() kernels.DType            { return kernels.F32 }
func (h hostBuf) Slice(off, n int) kernels.Buffer { return h[off : off+n] }
func (h hostBuf) Host() []float32                 { return h }

func TestOp(t *testing.T) {
	if Sum.String() != "sum" || Avg.String() != "avg" || Op(7).String() != "op(7)" {
		t.Fatalf("names: %v %v %v", Sum, Avg, Op(7))
	}
	if !Sum.Valid() || !Avg.Valid() || Op(-1).Valid() || Op(2).Valid() {
		t.Fatal("Valid")
	}
}

func TestSingle(t *testing.T) {
	ctx := context.Background()
	var s Single
	if s.Rank() != 0 || s.Size() != 1 {
		t.Fatalf("rank %d size %d", s.Rank(), s.Size())
	}
	buf := hostBuf{1, 2, 3}
	for _, op := range []Op{Sum, Avg} {
		if err := s.AllReduce(ctx, buf, op); err != nil {
			t.Fatalf("%v: %v", op, err)
		}
	}
	if err := s.Broadcast(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 1 || buf[1] != 2 || buf[2] != 3 {
		t.Fatalf("buffer changed: %v", buf)
	}
	if err := s.AllReduce(ctx, buf, Op(9)); err == nil {
		t.Fatal("invalid op accepted")
	}
	if err := s.Broadcast(ctx, buf, 1); err == nil {
		t.Fatal("root 1 accepted in a world of one")
	}
	if err := s.AllReduce(ctx, nil, Sum); !errors.Is(err, ErrUnsupportedBuffer) {
		t.Fatalf("nil buffer: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err := s.AllReduce(cctx, buf, Sum)
	if !errors.Is(err, ErrAborted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	if err := s.AllReduce(ctx, buf, Sum); err != nil {
		t.Fatalf("a world of one stays usable after a cancelled call: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := s.Broadcast(ctx, buf, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
