package ring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
)

// Comm is one rank of a TCP ring. It implements collective.Communicator for
// host buffers (kernels.HostBuffer, float32).
//
// Concurrency: one collective at a time (a second concurrent call returns an
// error rather than corrupting the stream); Close may be called from any
// goroutine at any time and aborts the collective in flight.
//
// Failure: the first error (I/O, cancellation, deadline, desync, Close) is
// sticky. It closes both connections — which is how a failure reaches the
// other ranks: each neighbour's next read or write fails, it closes its own
// connections, and so on around the ring — and every later call returns it
// wrapped.
type Comm struct {
	rank, size int
	epoch      uint64
	segElems   int
	opTimeout  time.Duration
	log        *zap.Logger
	le         bool // zero-copy path: host memory is the wire format

	left, right         net.Conn // receive from left, send to right
	leftAddr, rightAddr string
	w                   *writer

	busy    atomic.Bool
	seq     uint64    // operation number; guarded by busy
	scratch []float32 // receive buffer for reduce-scatter; guarded by busy
	hdr     [headerLen]byte

	mu   sync.Mutex
	err  error         // sticky first failure
	dead chan struct{} // closed on the first failure
}

var _ collective.Communicator = (*Comm)(nil)

// New forms this rank's part of the ring: it listens (or takes
// cfg.Listener), dials its right neighbour with retries and accepts its left
// neighbour, authenticating both, within cfg.ConnectTimeout and ctx. ctx only
// bounds formation; each collective takes its own ctx. A ring of one opens no
// sockets. log may be nil.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Comm, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.check(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	log = log.With(zap.Int("rank", cfg.Rank), zap.Int("size", cfg.Size), zap.Uint64("epoch", cfg.Epoch))
	c := &Comm{
		rank: cfg.Rank, size: cfg.Size, epoch: cfg.Epoch,
		segElems:  cfg.SegmentBytes / 4,
		opTimeout: cfg.OpTimeout,
		log:       log,
		le:        hostIsLittleEndian(),
		dead:      make(chan struct{}),
	}
	if cfg.Size == 1 {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return c, nil
	}
	if len(cfg.Secret) < 16 {
		log.Warn("ring: job secret shorter than 16 bytes is guessable; use 32 random bytes")
	}
	l := &hsLocal{secret: append([]byte(nil), cfg.Secret...), epoch: cfg.Epoch, size: cfg.Size, rank: cfg.Rank, seg: c.segElems}

	ln := cfg.Listener
	if ln == nil {
		addr := cfg.ListenAddr
		if addr == "" {
			addr = cfg.Peers[cfg.Rank]
		}
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("ring: rank %d: listen: %w", cfg.Rank, err)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()

	type result struct {
		conn net.Conn
		err  error
	}
	dialc, accc := make(chan result, 1), make(chan result, 1)
	go func() {
		conn, err := dialRight(ctx, &cfg, l, log)
		dialc <- result{conn, err}
	}()
	go func() {
		conn, err := acceptLeft(ctx, &cfg, l, ln, log)
		accc <- result{conn, err}
	}()
	var errs []error
	for range 2 {
		var r result
		var side string
		select {
		case r = <-dialc:
			c.right, side = r.conn, "dial"
		case r = <-accc:
			c.left, side = r.conn, "accept"
		}
		if r.err != nil {
			// The first failure cancels the other side; its resulting
			// "cancelled" error would only be noise.
			if len(errs) == 0 || !errors.Is(r.err, context.Canceled) {
				errs = append(errs, r.err)
			}
			cancel()
			log.Debug("ring: formation failed", zap.String("side", side), zap.Error(r.err))
		}
	}
	ln.Close() // acceptLeft closed it already; this covers nothing-accepted paths
	if len(errs) > 0 {
		for _, conn := range []net.Conn{c.left, c.right} {
			if conn != nil {
				conn.Close()
			}
		}
		return nil, fmt.Errorf("ring: rank %d of %d (epoch %d): form ring: %w", cfg.Rank, cfg.Size, cfg.Epoch, errors.Join(errs...))
	}
	for _, conn := range []net.Conn{c.left, c.right} {
		if tc, ok := conn.(*net.TCPConn); ok && cfg.KeepAlive.Enable {
			_ = tc.SetKeepAliveConfig(cfg.KeepAlive) // best effort: only failure detection latency depends on it
		}
	}
	c.leftAddr, c.rightAddr = c.left.RemoteAddr().String(), c.right.RemoteAddr().String()
	c.w = newWriter(c.right, c.le, c.segElems, c.dead, c.writeFailed)
	go c.w.run()
	log.Info("ring: formed", zap.String("left", c.leftAddr), zap.String("right", c.rightAddr),
		zap.Duration("took", time.Since(start)))
	return c, nil
}

// Rank is this rank's index.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks in the ring.
func (c *Comm) Size() int { return c.size }

// Epoch is the epoch the ring was formed in.
func (c *Comm) Epoch() uint64 { return c.epoch }

// Close aborts any collective in flight, closes the connections and waits for
// the writer goroutine, which exits as soon as its connection is closed. It
// is idempotent and never blocks on the network.
func (c *Comm) Close() error {
	c.fail(fmt.Errorf("ring: rank %d: %w", c.rank, collective.ErrClosed))
	if c.w != nil {
		<-c.w.done
	}
	return nil
}

// fail records the first failure and tears the connections down, so that
// every blocked read and write on this rank returns at once and the
// neighbours see EOF (which is how the failure travels around the ring).
func (c *Comm) fail(err error) {
	c.mu.Lock()
	first := c.err == nil
	if first {
		c.err = err
		close(c.dead)
	}
	c.mu.Unlock()
	if !first {
		return
	}
	if c.left != nil {
		c.left.Close()
	}
	if c.right != nil {
		c.right.Close()
	}
	if errors.Is(err, collective.ErrClosed) {
		c.log.Debug("ring: closed")
	} else {
		c.log.Warn("ring: failed; communicator is now unusable", zap.Error(err))
	}
}

// failure is the sticky error, or nil.
func (c *Comm) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Comm) writeFailed(err error) {
	right := Right(c.rank, c.size)
	c.fail(fmt.Errorf("ring: rank %d: send to right neighbour rank %d (%s): %w: %w",
		c.rank, right, c.rightAddr, collective.ErrPeerLost, err))
}

// AllReduce implements collective.Communicator for buffers that implement
// kernels.HostBuffer with dtype F32; others fail with
// collective.ErrUnsupportedBuffer (a GPU buffer belongs to collective/nccl).
func (c *Comm) AllReduce(ctx context.Context, buf kernels.Buffer, op collective.Op) error {
	data, err := hostData(buf)
	if err != nil {
		return fmt.Errorf("ring: rank %d: allreduce: %w", c.rank, err)
	}
	return c.AllReduceFloat32(ctx, data, op)
}

// Broadcast implements collective.Communicator; buffers as for AllReduce.
func (c *Comm) Broadcast(ctx context.Context, buf kernels.Buffer, root int) error {
	data, err := hostData(buf)
	if err != nil {
		return fmt.Errorf("ring: rank %d: broadcast: %w", c.rank, err)
	}
	return c.BroadcastFloat32(ctx, data, root)
}

func hostData(buf kernels.Buffer) ([]float32, error) {
	if buf == nil {
		return nil, fmt.Errorf("nil buffer: %w", collective.ErrUnsupportedBuffer)
	}
	hb, ok := buf.(kernels.HostBuffer)
	if !ok {
		return nil, fmt.Errorf("buffer %T is not a kernels.HostBuffer (the TCP ring moves host memory; GPU buffers need collective/nccl): %w",
			buf, collective.ErrUnsupportedBuffer)
	}
	if buf.DType() != kernels.F32 {
		return nil, fmt.Errorf("buffer dtype %v, want f32: %w", buf.DType(), collective.ErrUnsupportedBuffer)
	}
	data := hb.Host()
	if len(data) != buf.Len() {
		return nil, fmt.Errorf("buffer Host() has %d elements but Len() is %d: %w", len(data), buf.Len(), collective.ErrUnsupportedBuffer)
	}
	return data, nil
}

// AllReduceFloat32 is AllReduce on a host slice, for callers that hold one.
// All ranks end with bit-identical contents: each chunk is summed once, in
// ring order, by the ranks along the ring, and that one result is what the
// all-gather distributes.
func (c *Comm) AllReduceFloat32(ctx context.Context, data []float32, op collective.Op) error {
	return c.allReduceFloat32(ctx, data, op, c.opTimeout)
}

// AllReduceUntimed is AllReduceFloat32 bounded by ctx alone, not by
// Config.OpTimeout: for a collective that some ranks enter long before the
// others for a known reason (the job's final confirmation waits for the
// lead to write the outputs, which takes as long as the disk needs). A
// peer that dies is still noticed: its connections break, or TCP keepalive
// gives up on a host that vanished.
func (c *Comm) AllReduceUntimed(ctx context.Context, data []float32, op collective.Op) error {
	return c.allReduceFloat32(ctx, data, op, 0)
}

func (c *Comm) allReduceFloat32(ctx context.Context, data []float32, op collective.Op, timeout time.Duration) error {
	if !op.Valid() {
		return fmt.Errorf("ring: rank %d: allreduce: invalid %v", c.rank, op)
	}
	seq, err := c.enter(ctx, "allreduce")
	if err != nil || c.size == 1 {
		return err // a world of one: the sum (and the average) is the buffer itself
	}
	defer c.busy.Store(false)
	stop := c.watch(ctx, "allreduce", seq, timeout)
	c.allReduce(data, op, seq)
	stop()
	if err := c.settle(); err != nil {
		return err
	}
	if op == collective.Avg {
		s := float32(1 / float64(c.size))
		for i := range data {
			data[i] *= s
		}
	}
	return nil
}

// BroadcastFloat32 is Broadcast on a host slice.
func (c *Comm) BroadcastFloat32(ctx context.Context, data []float32, root int) error {
	if root < 0 || root >= c.size {
		return fmt.Errorf("ring: rank %d: broadcast: root %d out of range [0, %d)", c.rank, root, c.size)
	}
	seq, err := c.enter(ctx, "broadcast")
	if err != nil || c.size == 1 {
		return err
	}
	defer c.busy.Store(false)
	stop := c.watch(ctx, "broadcast", seq, c.opTimeout)
	c.broadcast(data, root, seq)
	stop()
	return c.settle()
}

// settle ends an operation: on failure it waits for the writer goroutine to
// exit (promptly: its connection is closed), so that nothing reads the
// caller's buffer after the call returns, whatever the outcome.
func (c *Comm) settle() error {
	err := c.failure()
	if err != nil {
		<-c.w.done
	}
	return err
}

// enter starts a collective: it claims the Comm and numbers the operation.
// A ring of one returns with the Comm released (nothing to do).
func (c *Comm) enter(ctx context.Context, what string) (uint64, error) {
	if c.busy.Swap(true) {
		return 0, fmt.Errorf("ring: rank %d: %s: another collective is in flight on this Comm (one at a time)", c.rank, what)
	}
	if err := c.failure(); err != nil {
		c.busy.Store(false)
		return 0, fmt.Errorf("ring: rank %d: %s: communicator unusable after an earlier failure: %w", c.rank, what, err)
	}
	if c.size == 1 {
		c.busy.Store(false)
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("ring: rank %d: %s: %w: %w", c.rank, what, collective.ErrAborted, err)
		}
		return 0, nil
	}
	seq := c.seq
	c.seq++
	return seq, nil
}

// watch arranges for ctx's cancellation (or timeout, when positive) to
// abort the operation by failing the Comm, which closes the connections
// under any blocked read or write. It starts no goroutine unless ctx ends.
func (c *Comm) watch(ctx context.Context, what string, seq uint64, timeout time.Duration) (stop func()) {
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	stopAfter := context.AfterFunc(ctx, func() {
		c.fail(fmt.Errorf("ring: rank %d: %s #%d: %w: %w", c.rank, what, seq, collective.ErrAborted, ctx.Err()))
	})
	return func() {
		stopAfter()
		cancel()
	}
}

// allReduce runs the ring schedule. Failures are recorded with c.fail; the
// caller reads the outcome from c.failure().
//
// Pipelining: the chunk received at step s is the chunk sent at step s+1
// (Schedule's third property), so as soon as a segment has been received
// and reduced (or stored, in all-gather) it is queued for the writer
// goroutine, which sends it while this goroutine receives the next segment.
// Sends never block receives, so the ring cannot deadlock on full socket
// buffers whatever the buffer size.
//
// The writer reads the buffer while this goroutine writes other parts of it.
// They never touch the same elements at once: a chunk is received in
// reduce-scatter before it is sent, and when a segment is received again in
// all-gather, its value was computed from this rank's reduce-scatter send of
// it, which has therefore left this rank's memory. That causal argument is
// invisible to the race detector and fragile under change, so before
// overwriting a segment in all-gather, allReduce also checks that the
// writer has counted that send as written (an atomic load that is already
// true in practice).
func (c *Comm) allReduce(data []float32, op collective.Op, seq uint64) {
	chunks := Chunks(len(data), c.size)
	steps := Steps(c.size)
	base := header{kind: kindAllReduce, op: uint8(op), seq: seq, total: uint64(len(data))}
	// rsFrame[ch]: the writer index of the first reduce-scatter frame of
	// chunk ch (its segments are queued consecutively).
	rsFrame := make([]uint64, c.size)

	first := Schedule(c.rank, c.size, 0).Send
	rsFrame[first] = c.queueChunk(base, 0, first, chunks[first], data, steps == 1)
	for s := range steps {
		st := Schedule(c.rank, c.size, s)
		r := chunks[st.Recv]
		ns := NumSegments(r.Len, c.segElems)
		for j := range ns {
			sg := Segment(r, c.segElems, j)
			if st.Phase == AllGather && !c.w.waitWritten(rsFrame[st.Recv]+uint64(j)) {
				return
			}
			want := base
			want.step, want.chunk, want.off, want.n = uint32(s), uint32(st.Recv), uint64(sg.Off), uint32(sg.Len)
			if !c.recv(want, data[sg.Off:sg.End()], st.Phase == ReduceScatter, st.Phase.String()) {
				return
			}
			if s+1 < steps {
				next := want
				next.step = uint32(s + 1)
				i := c.w.push(next, data[sg.Off:sg.End()], s+1 == steps-1 && j == ns-1)
				if j == 0 && s+1 < c.size-1 {
					rsFrame[st.Recv] = i
				}
			}
		}
	}
	c.awaitFlush()
}

// broadcast pipelines root's buffer along the ring, segment by segment.
func (c *Comm) broadcast(data []float32, root int, seq uint64) {
	recv, forward := BroadcastRole(c.rank, c.size, root)
	whole := Range{0, len(data)}
	ns := NumSegments(len(data), c.segElems)
	for j := range ns {
		sg := Segment(whole, c.segElems, j)
		h := header{kind: kindBroadcast, seq: seq, total: uint64(len(data)),
			step: uint32(root), off: uint64(sg.Off), n: uint32(sg.Len)}
		if recv && !c.recv(h, data[sg.Off:sg.End()], false, "broadcast") {
			return
		}
		if forward {
			c.w.push(h, data[sg.Off:sg.End()], j == ns-1)
		}
	}
	if forward {
		c.awaitFlush()
	}
}

// queueChunk queues every segment of chunk ch as frames of the given step
// and returns the writer index of the first.
func (c *Comm) queueChunk(base header, step, ch int, r Range, data []float32, lastStep bool) uint64 {
	ns := NumSegments(r.Len, c.segElems)
	var first uint64
	for j := range ns {
		sg := Segment(r, c.segElems, j)
		h := base
		h.step, h.chunk, h.off, h.n = uint32(step), uint32(ch), uint64(sg.Off), uint32(sg.Len)
		i := c.w.push(h, data[sg.Off:sg.End()], lastStep && j == ns-1)
		if j == 0 {
			first = i
		}
	}
	return first
}

// awaitFlush waits until the writer has handed the operation's last frame
// to the kernel: only then may the caller touch the buffer again.
func (c *Comm) awaitFlush() {
	select {
	case <-c.w.flushed:
	case <-c.dead:
	}
}

// recv reads the next frame from the left neighbour, checks that it is
// exactly the frame want describes, and adds it into dst (reduce) or stores
// it there. It reports false after recording a failure.
func (c *Comm) recv(want header, dst []float32, reduce bool, phase string) bool {
	if _, err := io.ReadFull(c.left, c.hdr[:]); err != nil {
		c.fail(c.recvErr(want, phase, err))
		return false
	}
	got, err := parseHeader(&c.hdr)
	if err == nil && got != want {
		err = fmt.Errorf("got frame %v, want %v", got, want)
	}
	if err != nil {
		c.fail(fmt.Errorf("ring: rank %d: %s #%d (%s step %d) from left neighbour rank %d: %w: %w",
			c.rank, kindName(want.kind), want.seq, phase, want.step, Left(c.rank, c.size), ErrDesync, err))
		return false
	}
	n := len(dst)
	if !reduce && c.le {
		_, err = io.ReadFull(c.left, asBytes(dst)) // zero copy, straight into place
	} else {
		if cap(c.scratch) < n {
			c.scratch = make([]float32, min(max(n, 2*cap(c.scratch)), c.segElems))
		}
		b := asBytes(c.scratch[:n])
		if _, err = io.ReadFull(c.left, b); err == nil {
			switch {
			case reduce && c.le:
				add(dst, c.scratch[:n])
			case reduce:
				addLE(dst, b)
			default:
				decodeLE(dst, b)
			}
		}
	}
	if err != nil {
		c.fail(c.recvErr(want, phase, err))
		return false
	}
	return true
}

func (c *Comm) recvErr(want header, phase string, err error) error {
	return fmt.Errorf("ring: rank %d: %s #%d (%s step %d): receive from left neighbour rank %d (%s): %w: %w",
		c.rank, kindName(want.kind), want.seq, phase, want.step, Left(c.rank, c.size), c.leftAddr, collective.ErrPeerLost, err)
}

func kindName(k uint8) string {
	if k == kindBroadcast {
		return "broadcast"
	}
	return "allreduce"
}
