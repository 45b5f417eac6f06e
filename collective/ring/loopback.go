package ring

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
)

// NewLoopback forms a ring of size ranks inside this process over TCP on
// 127.0.0.1, on ephemeral ports: for tests, benchmarks and the CLI's bench.
// base supplies everything but Rank, Size, Peers, Listener and (when empty)
// Secret, which gets random bytes. On error every rank already formed is
// closed.
func NewLoopback(ctx context.Context, size int, base Config, log *zap.Logger) ([]*Comm, error) {
	if size < 1 {
		return nil, fmt.Errorf("ring: loopback world of %d ranks", size)
	}
	if len(base.Secret) == 0 {
		base.Secret = make([]byte, 32)
		if _, err := rand.Read(base.Secret); err != nil {
			return nil, err
		}
	}
	lns := make([]net.Listener, size)
	peers := make([]string, size)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return nil, fmt.Errorf("ring: loopback listen: %w", err)
		}
		lns[i], peers[i] = ln, ln.Addr().String()
	}
	comms := make([]*Comm, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range comms {
		cfg := base
		cfg.Rank, cfg.Size, cfg.Peers, cfg.Listener, cfg.ListenAddr = i, size, peers, lns[i], ""
		wg.Add(1)
		go func() {
			defer wg.Done()
			comms[i], errs[i] = New(ctx, cfg, log)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range comms {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return comms, nil
}

// Throughput is one measured transfer.
type Throughput struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// GBps is the rate in gigabytes (1e9 bytes) per second.
func (t Throughput) GBps() float64 {
	if t.Seconds <= 0 {
		return 0
	}
	return float64(t.Bytes) / t.Seconds / 1e9
}

// LoopbackThroughput measures one TCP stream over 127.0.0.1: it sends bytes
// through a fresh connection and times it until the receiver has read them
// all. It is the ceiling for a ring on this host (every ring step is such a
// stream), reported by `peertune bench allreduce` next to the ring's own
// numbers. Sender and receiver are goroutines of this process; the kernel
// path is the same as between two processes.
func LoopbackThroughput(ctx context.Context, bytes int64) (Throughput, error) {
	if bytes <= 0 {
		return Throughput{}, fmt.Errorf("ring: loopback throughput: %d bytes", bytes)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Throughput{}, fmt.Errorf("ring: loopback throughput: %w", err)
	}
	defer ln.Close()
	type res struct {
		n   int64
		err error
		end time.Time
	}
	got := make(chan res, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- res{err: err}
			return
		}
		defer conn.Close()
		n, err := io.CopyBuffer(io.Discard, conn, make([]byte, 1<<20))
		got <- res{n, err, time.Now()}
	}()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-got
		return Throughput{}, fmt.Errorf("ring: loopback throughput: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 1<<20)
	start := time.Now()
	var werr error
	for left := bytes; left > 0 && werr == nil; {
		n := min(left, int64(len(buf)))
		_, werr = conn.Write(buf[:n])
		left -= n
	}
	conn.Close() // EOF tells the receiver to stop
	r := <-got
	switch {
	case werr != nil:
		return Throughput{}, fmt.Errorf("ring: loopback throughput: send: %w", werr)
	case r.err != nil:
		return Throughput{}, fmt.Errorf("ring: loopback throughput: receive: %w", r.err)
	case r.n != bytes:
		return Throughput{}, fmt.Errorf("ring: loopback throughput: received %d of %d bytes", r.n, bytes)
	}
	return Throughput{Bytes: bytes, Seconds: r.end.Sub(start).Seconds()}, nil
}

// BenchResult is one all-reduce benchmark, in the shape `peertune bench
// allreduce --json` prints. Bandwidths follow nccl-tests: algbw is the
// buffer size over the time of one all-reduce; busbw = algbw·2(N-1)/N is
// what each link carried, comparable across rank counts and with the
// link's raw throughput.
type BenchResult struct {
	Ranks     int     `json:"ranks"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"` // mean time of one all-reduce
	AlgBWGBps float64 `json:"algbw_gbps"`
	BusBWGBps float64 `json:"busbw_gbps"`
}

// Bandwidth fills in the bandwidths from Ranks, Bytes and Seconds.
func (r *BenchResult) Bandwidth() {
	if r.Seconds <= 0 {
		return
	}
	r.AlgBWGBps = float64(r.Bytes) / r.Seconds / 1e9
	r.BusBWGBps = r.AlgBWGBps * 2 * float64(r.Ranks-1) / float64(r.Ranks)
}

// BenchAllReduce times iters all-reduces (Sum, after one warm-up) of a
// buffer of bytes (rounded down to whole float32s) among ranks in-process
// ranks over loopback TCP. base is as for NewLoopback (DefaultConfig() is
// fine).
func BenchAllReduce(ctx context.Context, ranks int, bytes int64, iters int, base Config, log *zap.Logger) (BenchResult, error) {
	if ranks < 1 || bytes < 0 || iters < 1 {
		return BenchResult{}, fmt.Errorf("ring: bench: ranks %d, bytes %d, iters %d", ranks, bytes, iters)
	}
	comms, err := NewLoopback(ctx, ranks, base, log)
	if err != nil {
		return BenchResult{}, fmt.Errorf("ring: bench: %w", err)
	}
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	n := int(bytes / 4)
	bufs := make([][]float32, ranks)
	for r := range bufs {
		bufs[r] = make([]float32, n)
		for i := range bufs[r] {
			bufs[r][i] = float32(i%1000) * 1e-3
		}
	}
	run := func(times int) error {
		errs := make([]error, ranks)
		var wg sync.WaitGroup
		for r, c := range comms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range times {
					if errs[r] = c.AllReduceFloat32(ctx, bufs[r], collective.Sum); errs[r] != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := run(1); err != nil {
		return BenchResult{}, fmt.Errorf("ring: bench warm-up: %w", err)
	}
	start := time.Now()
	if err := run(iters); err != nil {
		return BenchResult{}, fmt.Errorf("ring: bench: %w", err)
	}
	res := BenchResult{Ranks: ranks, Bytes: int64(n) * 4, Seconds: time.Since(start).Seconds() / float64(iters)}
	res.Bandwidth()
	return res, nil
}
