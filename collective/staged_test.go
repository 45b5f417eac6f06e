package collective_test

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/kernels"
)

// deviceBuf is a buffer that is not host memory, as a GPU's is: only the
// backend's CopyIn/CopyOut reach its elements.
type deviceBuf struct{ data []float32 }

func (b *deviceBuf) Len() int                        { return len(b.data) }
func (b *deviceBuf) DType() kernels.DType            { return kernels.F32 }
func (b *deviceBuf) Slice(off, n int) kernels.Buffer { return &deviceBuf{b.data[off : off+n]} }

// copier is the part of a Backend that Staged uses.
type copier struct{ kernels.Backend }

func (copier) CopyIn(dst kernels.Buffer, src []float32) error {
	copy(dst.(*deviceBuf).data, src)
	return nil
}

func (copier) CopyOut(dst []float32, src kernels.Buffer) error {
	copy(dst, src.(*deviceBuf).data)
	return nil
}

// TestStagedRingOnDeviceBuffers: the TCP ring reduces and broadcasts buffers
// that live outside host memory through Staged.
func TestStagedRingOnDeviceBuffers(t *testing.T) {
	comms, err := ring.NewLoopback(context.Background(), 3, ring.DefaultConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	bufs := make([]*deviceBuf, 3)
	for r := range bufs {
		bufs[r] = &deviceBuf{data: make([]float32, 1001)}
		for i := range bufs[r].data {
			bufs[r].data[i] = float32(r*1000 + i)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &collective.Staged{Comm: c, Backend: copier{}}
			if errs[r] = s.AllReduce(context.Background(), bufs[r], collective.Sum); errs[r] != nil {
				return
			}
			bufs[r].data[0] += float32(r) // make the ranks differ again
			errs[r] = s.Broadcast(context.Background(), bufs[r], 2)
		}()
	}
	wg.Wait()
	for r := range bufs {
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
		for i, v := range bufs[r].data {
			want := float32(3*i + 3000)
			if i == 0 {
				want += 2 // rank 2's value after the broadcast
			}
			if v != want {
				t.Fatalf("rank %d element %d: %v, want %v", r, i, v, want)
			}
		}
	}
}
