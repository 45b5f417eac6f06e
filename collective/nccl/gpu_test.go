package nccl

import (
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cuda"
)

// TestNCCLOneRankAllReduceGPU runs a one-rank communicator on a real GPU
// buffer from the CUDA backend, on the backend's own stream: Sum and Avg over
// one rank leave the data as it was, and Broadcast from rank 0 too. It skips
// without a GPU (the device check runs it).
func TestNCCLOneRankAllReduceGPU(t *testing.T) {
	if _, err := Default(); err != nil {
		t.Skipf("NCCL not available: %v", err)
	}
	be, err := cuda.New(cuda.DefaultOptions())
	if err != nil {
		t.Skipf("no usable GPU: %v", err)
	}
	defer be.Close()
	id, err := NewUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Rank, cfg.Size, cfg.ID, cfg.Device = 0, 1, id, be.Device().Ordinal
	cfg.Context, cfg.Stream = be.Handles()
	c, err := New(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 1<<20 + 3
	buf, err := be.Alloc(n, kernels.F32)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, n)
	for i := range want {
		want[i] = float32(i%977) * 0.25
	}
	if err := be.CopyIn(buf, want); err != nil {
		t.Fatal(err)
	}
	for _, op := range []collective.Op{collective.Sum, collective.Avg} {
		if err := c.AllReduce(context.Background(), buf, op); err != nil {
			t.Fatalf("%v: %v", op, err)
		}
	}
	if err := c.Broadcast(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n)
	if err := be.CopyOut(got, buf); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("element %d: %v, want %v", i, got[i], want[i])
		}
	}
}
