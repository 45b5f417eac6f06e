package collective

import (
	"context"
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// HostCollective is a Communicator that can also work on host float32
// slices directly (the TCP ring).
type HostCollective interface {
	Communicator
	AllReduceFloat32(ctx context.Context, data []float32, op Op) error
	BroadcastFloat32(ctx context.Context, data []float32, root int) error
}

// Staged runs a host collective on the buffers of any backend by copying each
// buffer to host memory, running the collective there and copying the result
// back. It lets a GPU job use the TCP ring where NCCL is absent, at the cost
// of two device-host copies per operation. Host buffers pass straight
// through. Like every Communicator it is not safe for concurrent use.
type Staged struct {
	Comm    HostCollective
	Backend kernels.Backend
	host    []float32
}

var _ Communicator = (*Staged)(nil)

// Rank is the wrapped communicator's rank.
func (s *Staged) Rank() int { return s.Comm.Rank() }

// Size is the wrapped communicator's size.
func (s *Staged) Size() int { return s.Comm.Size() }

func (s *Staged) stage(buf kernels.Buffer) ([]float32, error) {
	if cap(s.host) < buf.Len() {
		s.host = make([]float32, buf.Len())
	}
	h := s.host[:buf.Len()]
	if err := s.Backend.CopyOut(h, buf); err != nil {
		return nil, fmt.Errorf("stage to host: %w", err)
	}
	return h, nil
}

// AllReduce reduces buf across ranks in place.
func (s *Staged) AllReduce(ctx context.Context, buf kernels.Buffer, op Op) error {
	if _, ok := buf.(kernels.HostBuffer); ok {
		return s.Comm.AllReduce(ctx, buf, op)
	}
	h, err := s.stage(buf)
	if err != nil {
		return err
	}
	if err := s.Comm.AllReduceFloat32(ctx, h, op); err != nil {
		return err
	}
	return s.Backend.CopyIn(buf, h)
}

// Broadcast copies root's buf to every rank.
func (s *Staged) Broadcast(ctx context.Context, buf kernels.Buffer, root int) error {
	if _, ok := buf.(kernels.HostBuffer); ok {
		return s.Comm.Broadcast(ctx, buf, root)
	}
	h, err := s.stage(buf)
	if err != nil {
		return err
	}
	if err := s.Comm.BroadcastFloat32(ctx, h, root); err != nil {
		return err
	}
	return s.Backend.CopyIn(buf, h)
}

// Close closes the wrapped communicator.
func (s *Staged) Close() error { return s.Comm.Close() }
