package ring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peertune/peertune/collective"
)

// checkAllReduce compares every rank's result with a float64 sum of the
// inputs, and requires all ranks to agree bit for bit (replicas agree).
func checkAllReduce(t *testing.T, in, out [][]float32, op collective.Op) {
	t.Helper()
	n := len(in)
	for r := 1; r < n; r++ {
		for i := range out[0] {
			if math.Float32bits(out[r][i]) != math.Float32bits(out[0][i]) {
				t.Fatalf("rank %d differs from rank 0 at %d: %v vs %v", r, i, out[r][i], out[0][i])
			}
		}
	}
	for i := range out[0] {
		var sum, abs float64
		for r := range in {
			sum += float64(in[r][i])
			abs += math.Abs(float64(in[r][i]))
		}
		tol := float64(n+1) * 0x1p-24 * abs
		if op == collective.Avg {
			sum /= float64(n)
			tol /= float64(n) * 0.5 // one more rounding from the scale
		}
		if d := math.Abs(float64(out[0][i]) - sum); d > tol {
			t.Fatalf("element %d: got %v, want %v (|diff| %g > tol %g)", i, out[0][i], sum, d, tol)
		}
	}
}

func TestAllReduce(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	for n := 2; n <= 5; n++ {
		cfg := testConfig()
		cfg.SegmentBytes = 64 << 10 // several segments per chunk for the big case
		comms := newWorld(t, n, cfg)
		for k, l := range []int{0, 1, 2, n - 1, n + 1, 1000, 1<<20 + 3} {
			op := []collective.Op{collective.Sum, collective.Avg}[k%2]
			t.Run(fmt.Sprintf("N%d/len%d/%v", n, l, op), func(t *testing.T) {
				in := randomInputs(uint64(n*1000+l), n, l)
				out := make([][]float32, n)
				for r := range out {
					out[r] = slices.Clone(in[r])
				}
				errs := onAll(comms, func(r int, c *Comm) error { return c.AllReduce(ctx, hostBuf(out[r]), op) })
				for r, err := range errs {
					if err != nil {
						t.Fatalf("rank %d: %v", r, err)
					}
				}
				checkAllReduce(t, in, out, op)
			})
		}
		for _, c := range comms {
			c.Close()
		}
	}
}

// TestAllReduceTinySegments makes every chunk many segments (4 floats), and
// runs the portable (big-endian host) encode/decode path as well.
func TestAllReduceTinySegments(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	for _, portable := range []bool{false, true} {
		cfg := testConfig()
		cfg.SegmentBytes = 16
		comms := newWorld(t, 3, cfg)
		if portable {
			for _, c := range comms {
				c.le = false
				c.w.le = false
				c.w.scratch = make([]byte, 4*c.segElems)
			}
		}
		for _, l := range []int{0, 1, 3, 4, 13, 1000} {
			in := randomInputs(uint64(l), 3, l)
			out := make([][]float32, 3)
			for r := range out {
				out[r] = slices.Clone(in[r])
			}
			for r, err := range onAll(comms, func(r int, c *Comm) error {
				return c.AllReduceFloat32(ctx, out[r], collective.Sum)
			}) {
				if err != nil {
					t.Fatalf("portable=%v len %d rank %d: %v", portable, l, r, err)
				}
			}
			checkAllReduce(t, in, out, collective.Sum)
		}
		// Broadcast through the same path.
		want := randomInputs(99, 1, 37)[0]
		bufs := [][]float32{slices.Clone(want), make([]float32, 37), make([]float32, 37)}
		for r, err := range onAll(comms, func(r int, c *Comm) error { return c.BroadcastFloat32(ctx, bufs[r], 0) }) {
			if err != nil {
				t.Fatalf("portable=%v broadcast rank %d: %v", portable, r, err)
			}
		}
		for r := range bufs {
			if !slices.Equal(bufs[r], want) {
				t.Fatalf("portable=%v broadcast: rank %d differs", portable, r)
			}
		}
	}
}

// TestAllReduceLarge moves buffers far bigger than the sockets' buffers with
// segments bigger than them too: a ring that sent before receiving would
// deadlock here.
func TestAllReduceLarge(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const l = 4 << 20 // 16 MiB of float32
	for _, n := range []int{2, 3} {
		cfg := testConfig()
		cfg.SegmentBytes = 8 << 20
		comms := newWorld(t, n, cfg)
		bufs := make([][]float32, n)
		for r := range bufs {
			bufs[r] = make([]float32, l)
			for i := range bufs[r] {
				bufs[r][i] = float32((r + 1) * (i % 5))
			}
		}
		for r, err := range onAll(comms, func(r int, c *Comm) error { return c.AllReduceFloat32(ctx, bufs[r], collective.Sum) }) {
			if err != nil {
				t.Fatalf("N %d rank %d: %v", n, r, err)
			}
		}
		tri := float32(n * (n + 1) / 2)
		for r := range bufs {
			for i, v := range bufs[r] {
				if v != tri*float32(i%5) {
					t.Fatalf("N %d rank %d element %d: %v, want %v", n, r, i, v, tri*float32(i%5))
				}
			}
		}
		for _, c := range comms {
			c.Close()
		}
	}
}

func TestBroadcast(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	for n := 1; n <= 4; n++ {
		cfg := testConfig()
		cfg.SegmentBytes = 4 << 10
		comms := newWorld(t, n, cfg)
		for root := range n {
			for _, l := range []int{0, 1, 5, 1000, 1<<18 + 1} {
				want := randomInputs(uint64(root*7+l), 1, l)[0]
				bufs := make([][]float32, n)
				for r := range bufs {
					bufs[r] = make([]float32, l)
					if r == root {
						copy(bufs[r], want)
					} else {
						for i := range bufs[r] {
							bufs[r][i] = -1
						}
					}
				}
				for r, err := range onAll(comms, func(r int, c *Comm) error { return c.Broadcast(ctx, hostBuf(bufs[r]), root) }) {
					if err != nil {
						t.Fatalf("N %d root %d len %d rank %d: %v", n, root, l, r, err)
					}
				}
				for r := range bufs {
					if !slices.Equal(bufs[r], want) {
						t.Fatalf("N %d root %d len %d: rank %d got a different buffer", n, root, l, r)
					}
				}
			}
		}
		for _, c := range comms {
			c.Close()
		}
	}
}

func TestSizeOne(t *testing.T) {
	checkLeaks(t)
	cfg := DefaultConfig()
	cfg.Size = 1
	c, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := hostBuf{1, 2, 3}
	for _, op := range []collective.Op{collective.Sum, collective.Avg} {
		if err := c.AllReduce(context.Background(), buf, op); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Broadcast(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(buf, hostBuf{1, 2, 3}) {
		t.Fatalf("buffer changed: %v", buf)
	}
	if err := c.Broadcast(context.Background(), buf, 1); err == nil {
		t.Fatal("root 1 accepted")
	}
	c.Close()
	if err := c.AllReduce(context.Background(), buf, collective.Sum); !errors.Is(err, collective.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	comms := newWorld(t, 2, testConfig())
	c := comms[0]
	if err := c.AllReduce(ctx, deviceBuf{4}, collective.Sum); !errors.Is(err, collective.ErrUnsupportedBuffer) {
		t.Fatalf("device buffer: %v", err)
	}
	if err := c.Broadcast(ctx, nil, 0); !errors.Is(err, collective.ErrUnsupportedBuffer) {
		t.Fatalf("nil buffer: %v", err)
	}
	if err := c.AllReduce(ctx, hostBuf{1}, collective.Op(5)); err == nil {
		t.Fatal("bad op accepted")
	}
	if err := c.Broadcast(ctx, hostBuf{1}, 2); err == nil {
		t.Fatal("root out of range accepted")
	}
	// Argument errors happen before any I/O: the ring is still usable.
	bufs := [][]float32{{1, 2}, {3, 4}}
	for r, err := range onAll(comms, func(r int, c *Comm) error { return c.AllReduceFloat32(ctx, bufs[r], collective.Sum) }) {
		if err != nil {
			t.Fatalf("rank %d after argument errors: %v", r, err)
		}
	}
	if !slices.Equal(bufs[0], []float32{4, 6}) || !slices.Equal(bufs[1], []float32{4, 6}) {
		t.Fatalf("got %v", bufs)
	}
}

func TestConfigCheck(t *testing.T) {
	checkLeaks(t)
	good := testConfig()
	good.Size, good.Rank, good.Peers = 2, 0, []string{"127.0.0.1:1", "127.0.0.1:2"}
	for name, mut := range map[string]func(*Config){
		"size0":     func(c *Config) { c.Size = 0 },
		"rank":      func(c *Config) { c.Rank = 2 },
		"peers":     func(c *Config) { c.Peers = c.Peers[:1] },
		"emptypeer": func(c *Config) { c.Peers = []string{"", "x:1"} },
		"secret":    func(c *Config) { c.Secret = nil },
		"segment":   func(c *Config) { c.SegmentBytes = 2 },
		"timeout":   func(c *Config) { c.HandshakeTimeout = 0 },
		"optimeout": func(c *Config) { c.OpTimeout = -1 },
		"pending":   func(c *Config) { c.MaxPendingHandshakes = 0 },
	} {
		cfg := good
		mut(&cfg)
		if _, err := New(context.Background(), cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// stuck reports whether any of errs is still missing after d.
func waitErrs(t *testing.T, d time.Duration, errc <-chan rankErr, n int) []error {
	t.Helper()
	errs := make([]error, n)
	got := 0
	timeout := time.After(d)
	for got < n {
		select {
		case re := <-errc:
			errs[re.rank] = re.err
			got++
		case <-timeout:
			t.Fatalf("only %d of %d ranks returned within %v: %v", got, n, d, errs)
		}
	}
	return errs
}

type rankErr struct {
	rank int
	err  error
}

// loopAllReduce runs all-reduces on c until one fails, and reports that error.
func loopAllReduce(ctx context.Context, r int, c *Comm, l int, errc chan<- rankErr) {
	buf := make([]float32, l)
	for i := range buf {
		buf[i] = float32(i % 10)
	}
	for {
		if err := c.AllReduceFloat32(ctx, buf, collective.Avg); err != nil {
			errc <- rankErr{r, err}
			return
		}
	}
}

// TestCancelMidOperation cancels one rank's ctx while all ranks are inside a
// stream of all-reduces: every rank must return an error promptly.
func TestCancelMidOperation(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.SegmentBytes = 64 << 10
	comms := newWorld(t, 4, cfg)
	errc := make(chan rankErr, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for r, c := range comms {
		rctx := context.Background()
		if r == 2 {
			rctx = ctx
		}
		go loopAllReduce(rctx, r, c, 1<<20, errc)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	start := time.Now()
	errs := waitErrs(t, 3*time.Second, errc, 4)
	t.Logf("all ranks returned %v after the cancel", time.Since(start))
	for r, err := range errs {
		switch {
		case r == 2 && !(errors.Is(err, collective.ErrAborted) && errors.Is(err, context.Canceled)):
			t.Errorf("cancelled rank: %v", err)
		case r != 2 && !errors.Is(err, collective.ErrPeerLost):
			t.Errorf("rank %d: want ErrPeerLost, got %v", r, err)
		}
	}
	// The Comm is unusable afterwards, with the original cause.
	if err := comms[0].AllReduceFloat32(context.Background(), []float32{1}, collective.Sum); !errors.Is(err, collective.ErrPeerLost) {
		t.Errorf("after failure: %v", err)
	}
}

// TestCancelWhileWaiting cancels a rank that is blocked waiting for a rank
// that has not entered the collective yet; the late rank then fails at once.
func TestCancelWhileWaiting(t *testing.T) {
	checkLeaks(t)
	comms := newWorld(t, 4, testConfig())
	errc := make(chan rankErr, 4)
	ctx, cancel := context.WithCancel(context.Background())
	for r := range 3 {
		rctx := context.Background()
		if r == 1 {
			rctx = ctx
		}
		go func() {
			errc <- rankErr{r, comms[r].AllReduceFloat32(rctx, make([]float32, 1000), collective.Sum)}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	time.Sleep(100 * time.Millisecond)
	go func() {
		errc <- rankErr{3, comms[3].AllReduceFloat32(context.Background(), make([]float32, 1000), collective.Sum)}
	}()
	errs := waitErrs(t, 3*time.Second, errc, 4)
	if !errors.Is(errs[1], context.Canceled) {
		t.Errorf("rank 1: %v", errs[1])
	}
	for _, r := range []int{0, 2, 3} {
		if !errors.Is(errs[r], collective.ErrPeerLost) {
			t.Errorf("rank %d: %v", r, errs[r])
		}
	}
}

// TestOpTimeout: a rank that never shows up makes the others hit OpTimeout.
func TestOpTimeout(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.OpTimeout = 300 * time.Millisecond
	comms := newWorld(t, 3, cfg)
	errc := make(chan rankErr, 2)
	for r := range 2 {
		go func() {
			errc <- rankErr{r, comms[r].AllReduceFloat32(context.Background(), make([]float32, 100), collective.Sum)}
		}()
	}
	errs := waitErrs(t, 3*time.Second, errc, 2)
	sawDeadline := false
	for r, err := range errs {
		if !errors.Is(err, collective.ErrAborted) && !errors.Is(err, collective.ErrPeerLost) {
			t.Errorf("rank %d: %v", r, err)
		}
		sawDeadline = sawDeadline || errors.Is(err, context.DeadlineExceeded)
	}
	if !sawDeadline {
		t.Errorf("no rank reported the deadline: %v", errs)
	}
}

// TestAllReduceUntimed: a rank that enters three OpTimeouts late does not
// fail the others' AllReduceUntimed (it would AllReduceFloat32: see
// TestOpTimeout), and the sum is right.
func TestAllReduceUntimed(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.OpTimeout = 200 * time.Millisecond
	comms := newWorld(t, 3, cfg)
	errc := make(chan rankErr, 3)
	bufs := make([][]float32, 3)
	for r := range 3 {
		bufs[r] = []float32{float32(r + 1)}
		go func() {
			if r == 2 {
				time.Sleep(3 * cfg.OpTimeout)
			}
			errc <- rankErr{r, comms[r].AllReduceUntimed(context.Background(), bufs[r], collective.Sum)}
		}()
	}
	for r, err := range waitErrs(t, 5*time.Second, errc, 3) {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
	}
	for r, b := range bufs {
		if b[0] != 6 {
			t.Errorf("rank %d: sum %v, want 6", r, b[0])
		}
	}
}

// TestPeerClosed closes one rank abruptly in the middle of a stream of
// all-reduces; the others must fail with ErrPeerLost within a few seconds.
func TestPeerClosed(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.SegmentBytes = 64 << 10
	comms := newWorld(t, 4, cfg)
	errc := make(chan rankErr, 4)
	for r, c := range comms {
		go loopAllReduce(context.Background(), r, c, 1<<20, errc)
	}
	time.Sleep(200 * time.Millisecond)
	done := make(chan struct{})
	go func() { comms[1].Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close blocked")
	}
	errs := waitErrs(t, 3*time.Second, errc, 4)
	for r, err := range errs {
		want := collective.ErrPeerLost
		if r == 1 {
			want = collective.ErrClosed
		}
		if !errors.Is(err, want) {
			t.Errorf("rank %d: want %v, got %v", r, want, err)
		}
	}
	if err := comms[1].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestDesync: ranks that disagree on the buffer length or the op fail with
// ErrDesync instead of mis-summing, and nobody hangs.
func TestDesync(t *testing.T) {
	checkLeaks(t)
	for name, f := range map[string]func(r int, c *Comm) error{
		"length": func(r int, c *Comm) error {
			return c.AllReduceFloat32(context.Background(), make([]float32, 10+min(r, 1)), collective.Sum)
		},
		"op": func(r int, c *Comm) error {
			return c.AllReduceFloat32(context.Background(), make([]float32, 10), collective.Op(min(r, 1)))
		},
		"empty": func(r int, c *Comm) error {
			return c.AllReduceFloat32(context.Background(), make([]float32, 3*min(r, 1)), collective.Sum)
		},
	} {
		t.Run(name, func(t *testing.T) {
			comms := newWorld(t, 3, testConfig())
			errc := make(chan rankErr, 3)
			for r, c := range comms {
				go func() { errc <- rankErr{r, f(r, c)} }()
			}
			errs := waitErrs(t, 3*time.Second, errc, 3)
			desync := false
			for r, err := range errs {
				if err == nil {
					t.Errorf("rank %d succeeded", r)
				}
				desync = desync || errors.Is(err, ErrDesync)
			}
			if !desync {
				t.Errorf("no ErrDesync: %v", errs)
			}
		})
	}
}

func TestLoopbackThroughput(t *testing.T) {
	checkLeaks(t)
	tp, err := LoopbackThroughput(context.Background(), 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if tp.Bytes != 8<<20 || tp.Seconds <= 0 || tp.GBps() <= 0 {
		t.Fatalf("%+v", tp)
	}
	t.Logf("loopback TCP: %.2f GB/s", tp.GBps())
}

func TestBenchAllReduce(t *testing.T) {
	checkLeaks(t)
	res, err := BenchAllReduce(context.Background(), 3, 1<<20, 2, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	for _, k := range []string{`"ranks":3`, `"bytes":1048576`, `"seconds"`, `"algbw_gbps"`, `"busbw_gbps"`} {
		if !strings.Contains(string(b), k) {
			t.Fatalf("%s lacks %s", b, k)
		}
	}
	if math.Abs(res.BusBWGBps-res.AlgBWGBps*4/3) > 1e-9*res.AlgBWGBps {
		t.Fatalf("busbw %v algbw %v", res.BusBWGBps, res.AlgBWGBps)
	}
	t.Logf("%s", b)
}

func BenchmarkAllReduce(b *testing.B) {
	for _, ranks := range []int{2, 4} {
		for _, size := range []int64{1 << 20, 32 << 20} {
			b.Run(fmt.Sprintf("ranks%d/%dMiB", ranks, size>>20), func(b *testing.B) {
				comms, err := NewLoopback(context.Background(), ranks, testConfig(), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer func() {
					for _, c := range comms {
						c.Close()
					}
				}()
				bufs := make([][]float32, ranks)
				for r := range bufs {
					bufs[r] = make([]float32, size/4)
				}
				b.SetBytes(size)
				b.ResetTimer()
				start := time.Now()
				for r, err := range onAll(comms, func(r int, c *Comm) error {
					for range b.N {
						if err := c.AllReduceFloat32(context.Background(), bufs[r], collective.Sum); err != nil {
							return err
						}
					}
					return nil
				}) {
					if err != nil {
						b.Fatalf("rank %d: %v", r, err)
					}
				}
				res := BenchResult{Ranks: ranks, Bytes: size, Seconds: time.Since(start).Seconds() / float64(b.N)}
				res.Bandwidth()
				b.ReportMetric(res.AlgBWGBps, "algbw_GB/s")
				b.ReportMetric(res.BusBWGBps, "busbw_GB/s")
			})
		}
	}
}
