package nccl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
)

// DeviceBuffer is a kernels.Buffer in GPU memory: what NCCL moves. The CUDA
// backend's buffers (and their Slices) implement it; any other buffer fails
// with collective.ErrUnsupportedBuffer.
type DeviceBuffer interface {
	kernels.Buffer
	// DevicePtr is the CUdeviceptr of element 0, valid in the Comm's
	// context.
	DevicePtr() uintptr
}

// Polling: a non-blocking communicator is watched, not waited on. The
// interval starts short (a small all-reduce finishes in tens of
// microseconds) and backs off so that a long one costs little CPU.
const (
	pollMin = 20 * time.Microsecond
	pollMax = 2 * time.Millisecond
)

// Comm is one rank of an NCCL communicator. It implements
// collective.Communicator for DeviceBuffers of dtype F32 or BF16.
//
// Threading: every NCCL call on a Comm is made with its mutex held and binds
// the Comm's CUDA context inside the same C call (and restores the thread's
// previous context afterwards), so callers need no runtime.LockOSThread and
// may call from any goroutine. One collective at a time (a second
// concurrent call returns an error); Close and Shrink may be called from any
// goroutine at any time and abort the collective in flight.
//
// Failure: the first failure is sticky, like the ring's. Cancelling a
// collective's ctx, its OpTimeout, a CUDA error or Close aborts the NCCL
// communicator (ncclCommAbort), which also stops the kernels in flight, so
// the other ranks fail with ErrPeerLost. An asynchronous NCCL error that
// means the world broke (ncclRemoteError, ncclSystemError, ncclInternalError,
// ncclTimeout) fails with ErrPeerLost; when the library has ncclCommShrink,
// the NCCL communicator is then kept (not aborted) so that Shrink can
// exclude the dead ranks, and its kernel may still occupy the stream until
// Shrink or Close: call one of them before reusing the buffer or the stream.
type Comm struct {
	lib    *Library
	cu     *cudaFns
	bind   binder // the CUDA context every call runs in
	cudev  int    // CUdevice whose primary context this Comm retained; -1: none
	conf   *cConfig
	stream uintptr

	rank, size, device int
	epoch              uint64
	initTimeout        time.Duration
	opTimeout          time.Duration
	closeTimeout       time.Duration
	log                *zap.Logger

	busy atomic.Bool
	seq  uint64 // operation number; guarded by busy

	mu       sync.Mutex
	handle   uintptr // ncclComm_t; 0 before init and once released
	released bool    // teardown or Shrink has taken the handle
	keep     bool    // failed with ErrPeerLost; handle kept for Shrink
	err      error   // sticky first failure
	dead     chan struct{}
	torn     chan struct{} // closed once the handle is released and the context let go
	tornErr  error         // written before torn is closed
}

var _ collective.Communicator = (*Comm)(nil)

// New creates this rank's part of the communicator described by cfg. Every
// rank of the world calls it with the same ID and Size; it returns when all
// have joined, or fails within cfg.InitTimeout and ctx (ctx only bounds
// creation; each collective takes its own). log may be nil.
//
// Without NCCL the error wraps ErrLibraryNotFound; without the CUDA driver
// or a GPU it wraps ErrNoGPU. Both name what was looked for and where.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Comm, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	lib := cfg.Library
	if lib == nil {
		var err error
		if lib, err = Default(); err != nil {
			return nil, err
		}
	}
	cu, err := lib.driver()
	if err != nil {
		return nil, fmt.Errorf("nccl: rank %d: NCCL %v (%s) is installed but cannot run here: %w", cfg.Rank, lib.Version(), lib.Path(), err)
	}
	log = log.With(zap.Int("rank", cfg.Rank), zap.Int("size", cfg.Size), zap.Uint64("epoch", cfg.Epoch), zap.Int("device", cfg.Device))
	c, err := newComm(lib, cu, &cfg, cfg.Rank, cfg.Size, log)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.InitTimeout)
	defer cancel()
	id := cfg.ID
	h, res := lib.fns.commInit(c.bind, cfg.Size, &id, cfg.Rank, c.conf)
	c.mu.Lock()
	c.handle = h
	c.mu.Unlock()
	if err := c.callErr("ncclCommInitRankConfig", res, h); err != nil {
		c.fail(fmt.Errorf("nccl: rank %d of %d: init: %w", cfg.Rank, cfg.Size, err))
		return nil, c.abandon(nil)
	}
	if err := c.wait(ctx, "init", false); err != nil {
		return nil, c.abandon(err)
	}
	drv, _ := cu.driverVersion() // CUDA_VERSION encoding: 1000*major + 10*minor
	log.Info("nccl: communicator ready", zap.Stringer("nccl", lib.Version()), zap.String("library", lib.Path()),
		zap.String("found_by", lib.Source()), zap.String("cuda_driver", fmt.Sprintf("%d.%d", drv/1000, drv%1000/10)),
		zap.Duration("took", time.Since(start)))
	return c, nil
}

// newComm binds the device and allocates the config; the handle comes later.
func newComm(lib *Library, cu *cudaFns, cfg *Config, rank, size int, log *zap.Logger) (*Comm, error) {
	c := &Comm{
		lib: lib, cu: cu, cudev: -1, stream: cfg.Stream,
		rank: rank, size: size, device: cfg.Device, epoch: cfg.Epoch,
		initTimeout: cfg.InitTimeout, opTimeout: cfg.OpTimeout, closeTimeout: cfg.CloseTimeout,
		log:  log,
		dead: make(chan struct{}),
		torn: make(chan struct{}),
	}
	c.bind = binder{get: cu.ctxGetCurrent, set: cu.ctxSetCurrent, ctx: cfg.Context}
	if cfg.Context == 0 {
		n, r := cu.deviceCount()
		if r != cudaSuccess {
			return nil, fmt.Errorf("nccl: rank %d: %w", rank, &CUDAError{"cuDeviceGetCount", r, cu.errorText(r)})
		}
		if cfg.Device >= n {
			return nil, fmt.Errorf("nccl: rank %d: %w: Device %d, but the driver sees %d device(s)", rank, ErrNoGPU, cfg.Device, n)
		}
		dev, r := cu.device(cfg.Device)
		if r != cudaSuccess {
			return nil, fmt.Errorf("nccl: rank %d: %w", rank, &CUDAError{"cuDeviceGet", r, cu.errorText(r)})
		}
		ctx, r := cu.retainPrimary(dev)
		if r != cudaSuccess {
			return nil, fmt.Errorf("nccl: rank %d: device %d: %w", rank, cfg.Device, &CUDAError{"cuDevicePrimaryCtxRetain", r, cu.errorText(r)})
		}
		c.bind.ctx, c.cudev = ctx, dev
	}
	c.conf = newConfig(lib.Version())
	return c, nil
}

// Rank is this rank's index.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// Device is the CUDA device ordinal.
func (c *Comm) Device() int { return c.device }

// Library is the NCCL this Comm runs on.
func (c *Comm) Library() *Library { return c.lib }

// AllReduce implements collective.Communicator: in place, on a DeviceBuffer
// of dtype F32 or BF16, with ncclSum or ncclAvg. It returns once the
// operation has completed on the stream (every earlier operation on the
// stream too).
func (c *Comm) AllReduce(ctx context.Context, buf kernels.Buffer, op collective.Op) error {
	if !op.Valid() {
		return fmt.Errorf("nccl: rank %d: allreduce: invalid %v", c.rank, op)
	}
	ptr, n, dt, err := deviceData(buf)
	if err != nil {
		return fmt.Errorf("nccl: rank %d: allreduce: %w", c.rank, err)
	}
	nop := ncclSum
	if op == collective.Avg {
		nop = ncclAvg
	}
	return c.run(ctx, "allreduce", "ncclAllReduce", n, func(h uintptr) callResult {
		return c.lib.fns.allReduceCall(c.bind, ptr, n, dt, nop, h, c.stream)
	})
}

// Broadcast implements collective.Communicator; buffers as for AllReduce.
func (c *Comm) Broadcast(ctx context.Context, buf kernels.Buffer, root int) error {
	if root < 0 || root >= c.size {
		return fmt.Errorf("nccl: rank %d: broadcast: root %d out of range [0, %d)", c.rank, root, c.size)
	}
	ptr, n, dt, err := deviceData(buf)
	if err != nil {
		return fmt.Errorf("nccl: rank %d: broadcast: %w", c.rank, err)
	}
	return c.run(ctx, "broadcast", "ncclBroadcast", n, func(h uintptr) callResult {
		return c.lib.fns.broadcastCall(c.bind, ptr, n, dt, root, h, c.stream)
	})
}

// deviceData checks buf and returns its device pointer, length and NCCL
// datatype.
func deviceData(buf kernels.Buffer) (ptr uintptr, n, dtype int, err error) {
	if buf == nil {
		return 0, 0, 0, fmt.Errorf("nil buffer: %w", collective.ErrUnsupportedBuffer)
	}
	db, ok := buf.(DeviceBuffer)
	if !ok {
		return 0, 0, 0, fmt.Errorf("buffer %T is not a nccl.DeviceBuffer (NCCL moves GPU memory; host buffers go through the TCP ring): %w",
			buf, collective.ErrUnsupportedBuffer)
	}
	switch buf.DType() {
	case kernels.F32:
		dtype = ncclFloat32
	case kernels.BF16:
		dtype = ncclBfloat16
	default:
		return 0, 0, 0, fmt.Errorf("buffer dtype %v: %w", buf.DType(), collective.ErrUnsupportedBuffer)
	}
	n, ptr = buf.Len(), db.DevicePtr()
	if n > 0 && ptr == 0 {
		return 0, 0, 0, fmt.Errorf("buffer %T of %d elements has a null device pointer: %w", buf, n, collective.ErrUnsupportedBuffer)
	}
	return ptr, n, dtype, nil
}

// run is one collective: claim the Comm, enqueue with call, then watch the
// communicator and the stream until done, failed, cancelled or timed out.
func (c *Comm) run(ctx context.Context, what, ncclName string, n int, call func(h uintptr) callResult) error {
	if c.busy.Swap(true) {
		return fmt.Errorf("nccl: rank %d: %s: another collective is in flight on this Comm (one at a time)", c.rank, what)
	}
	defer c.busy.Store(false)
	if err := c.failure(); err != nil {
		return fmt.Errorf("nccl: rank %d: %s: communicator unusable after an earlier failure: %w", c.rank, what, err)
	}
	seq := c.seq
	c.seq++
	what = fmt.Sprintf("%s #%d", what, seq)
	if c.opTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opTimeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		// The other ranks will enqueue and wait for this one: abort, so
		// they see the world break instead of hanging.
		c.fail(fmt.Errorf("nccl: rank %d: %s: %w: %w", c.rank, what, collective.ErrAborted, err))
		c.teardown(true)
		return c.settle(nil)
	}
	if n == 0 {
		return nil // every rank has the same length: nobody enqueues anything
	}
	c.mu.Lock()
	h := c.handle
	if h == 0 || c.err != nil {
		c.mu.Unlock()
		return c.settle(nil)
	}
	res := call(h)
	c.mu.Unlock()
	if err := c.callErr(ncclName, res, h); err != nil {
		c.failResult(what, res.code, err)
		return c.settle(nil)
	}
	return c.wait(ctx, what, true)
}

// wait polls the communicator until its last call has finished (its state
// leaves ncclInProgress) and, when stream is set, until the stream has
// drained. Any failure is recorded (and acted on) before it returns.
func (c *Comm) wait(ctx context.Context, what string, stream bool) error {
	delay := pollMin
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		done, failed := c.poll(what, stream)
		if failed {
			return c.settle(nil)
		}
		if done {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			c.fail(fmt.Errorf("nccl: rank %d: %s: %w: %w", c.rank, what, collective.ErrAborted, ctx.Err()))
			c.teardown(true)
			return c.settle(nil)
		case <-c.dead:
			return c.settle(nil)
		case <-timer.C:
		}
		delay = min(2*delay, pollMax)
	}
}

// poll checks once. It reports done, or failed after recording the failure.
func (c *Comm) poll(what string, stream bool) (done, failed bool) {
	c.mu.Lock()
	h := c.handle
	if h == 0 || c.err != nil {
		c.mu.Unlock()
		return false, true
	}
	state, res := c.lib.fns.asyncError(c.bind, h)
	cu := cudaSuccess
	if res.code == Success && state == Success && stream {
		cu = c.cu.queryStream(c.bind, c.stream)
	}
	c.mu.Unlock()
	switch {
	case res.code != Success:
		c.failResult(what, res.code, c.callErr("ncclCommGetAsyncError", res, h))
		return false, true
	case state == InProgress:
		return false, false
	case state != Success:
		c.failResult(what, state, c.lib.errorf("ncclCommGetAsyncError", state, h))
		return false, true
	case cu == cudaSuccess:
		return true, false
	case cu == cudaErrNotReady:
		return false, false
	}
	c.fail(fmt.Errorf("nccl: rank %d: %s: waiting for the stream: %w", c.rank, what, &CUDAError{"cuStreamQuery", cu, c.cu.errorText(cu)}))
	c.teardown(true)
	return false, true
}

// failResult records a failed NCCL result. Errors that mean the world broke
// wrap collective.ErrPeerLost; with ncclCommShrink available the handle is
// then kept for Shrink, otherwise (and for local faults) it is aborted.
func (c *Comm) failResult(what string, r Result, err error) {
	if r.peerLost() {
		c.fail(fmt.Errorf("nccl: rank %d: %s: %w: %w", c.rank, what, collective.ErrPeerLost, err))
		if c.lib.CanShrink() {
			c.mu.Lock()
			c.keep = !c.released
			c.mu.Unlock()
			return
		}
	} else {
		c.fail(fmt.Errorf("nccl: rank %d: %s: %w", c.rank, what, err))
	}
	c.teardown(true)
}

// callErr turns a trampoline's outcome into an error; Success and
// InProgress are not errors.
func (c *Comm) callErr(call string, res callResult, comm uintptr) error {
	switch res.code {
	case Success, InProgress:
		return nil
	case ptBindFailed:
		return &CUDAError{"cuCtxSetCurrent (before " + call + ")", res.cu, c.cu.errorText(res.cu)}
	}
	return c.lib.errorf(call, res.code, comm)
}

// fail records the first failure; it does not touch NCCL.
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
	if errors.Is(err, collective.ErrClosed) {
		c.log.Debug("nccl: closed")
	} else {
		c.log.Warn("nccl: failed; communicator is now unusable", zap.Error(err))
	}
}

func (c *Comm) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// settle ends a failed operation: unless the handle is kept for Shrink, it
// waits (bounded) for the NCCL communicator to be released, so that no
// kernel of this operation still touches the caller's buffer when the call
// returns. It returns err, or the sticky failure when err is nil.
func (c *Comm) settle(err error) error {
	c.mu.Lock()
	keep := c.keep && !c.released
	if err == nil {
		err = c.err
	}
	c.mu.Unlock()
	if !keep {
		t := time.NewTimer(2 * c.closeTimeout) // finalize, then abort
		defer t.Stop()
		select {
		case <-c.torn:
		case <-t.C:
			c.log.Error("nccl: the communicator was not released in time; its kernels may still run", zap.Duration("waited", 2*c.closeTimeout))
		}
	}
	return err
}

// abandon aborts a communicator that never became ready (nothing is kept
// for Shrink: there is no world to shrink yet) and returns err, or the
// sticky failure when err is nil.
func (c *Comm) abandon(err error) error {
	c.mu.Lock()
	c.keep = false
	c.mu.Unlock()
	c.teardown(true)
	return c.settle(err)
}

// teardown starts releasing the NCCL communicator, once: ncclCommAbort when
// abort is set, else ncclCommFinalize (bounded) then ncclCommDestroy,
// falling back to abort. It runs in its own goroutine so that a stuck NCCL
// call cannot block the caller for ever; c.torn closes when it is done.
func (c *Comm) teardown(abort bool) {
	c.mu.Lock()
	if c.released {
		c.mu.Unlock()
		return
	}
	c.released = true
	h := c.handle
	c.handle = 0
	c.mu.Unlock()
	go func() {
		c.tornErr = c.release(h, abort)
		close(c.torn)
	}()
}

// release frees h (which nobody else uses any more) and the context.
func (c *Comm) release(h uintptr, abort bool) error {
	var errs []error
	if h != 0 && !abort {
		if err := c.finalize(h); err != nil {
			c.log.Warn("nccl: finalize failed; aborting instead", zap.Error(err))
			abort = true
		} else if err := c.callErr("ncclCommDestroy", c.lib.fns.commCall(c.lib.fns.commDestroy, c.bind, h), h); err != nil {
			errs = append(errs, err)
		}
	}
	if h != 0 && abort {
		if err := c.callErr("ncclCommAbort", c.lib.fns.commCall(c.lib.fns.commAbort, c.bind, h), h); err != nil {
			errs = append(errs, err)
		}
	}
	if c.cudev >= 0 {
		if r := c.cu.releasePrimary(c.cudev); r != cudaSuccess {
			errs = append(errs, &CUDAError{"cuDevicePrimaryCtxRelease", r, c.cu.errorText(r)})
		}
	}
	freeConfig(c.conf)
	c.conf = nil
	return errors.Join(errs...)
}

// finalize flushes h's operations (ncclCommFinalize) and waits, at most
// CloseTimeout, for its state to leave ncclInProgress.
func (c *Comm) finalize(h uintptr) error {
	res := c.lib.fns.commCall(c.lib.fns.commFinalize, c.bind, h)
	if err := c.callErr("ncclCommFinalize", res, h); err != nil {
		return err
	}
	deadline := time.Now().Add(c.closeTimeout)
	for delay := pollMin; ; delay = min(2*delay, pollMax) {
		state, res := c.lib.fns.asyncError(c.bind, h)
		if err := c.callErr("ncclCommGetAsyncError", res, h); err != nil {
			return err
		}
		switch {
		case state == Success:
			return nil
		case state != InProgress:
			return c.lib.errorf("ncclCommFinalize", state, h)
		case time.Now().After(deadline):
			return fmt.Errorf("ncclCommFinalize still in progress after %v", c.closeTimeout)
		}
		time.Sleep(delay)
	}
}

// Close releases the communicator. With nothing in flight and no earlier
// failure it flushes (ncclCommFinalize) and frees it (ncclCommDestroy);
// otherwise, or if that does not finish within CloseTimeout, it aborts
// (ncclCommAbort), which also stops an operation in flight. It is
// idempotent and returns within about twice CloseTimeout even if NCCL hangs
// (the stuck call is then left running and an error says so).
func (c *Comm) Close() error {
	c.fail(fmt.Errorf("nccl: rank %d: %w", c.rank, collective.ErrClosed))
	c.mu.Lock()
	graceful := errors.Is(c.err, collective.ErrClosed) && !c.busy.Load()
	c.mu.Unlock()
	c.teardown(!graceful)
	t := time.NewTimer(2 * c.closeTimeout)
	defer t.Stop()
	select {
	case <-c.torn:
		if c.tornErr != nil {
			return fmt.Errorf("nccl: rank %d: close: %w", c.rank, c.tornErr)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("nccl: rank %d: close: NCCL did not release the communicator within %v; leaving the call running", c.rank, 2*c.closeTimeout)
	}
}

// PeerLost tells the Comm, from any goroutine, that a rank of its world is
// gone (the membership layer saw it fail or leave): NCCL itself may never
// notice, for example a peer on the same host that died while the others
// wait in a collective. The operation in flight, and every later one, fails
// with an error wrapping collective.ErrPeerLost and reason. With
// ncclCommShrink the NCCL communicator is kept for Shrink, whose
// NCCL_SHRINK_ABORT ends the stuck kernels; without it the communicator is
// aborted now. A Comm that already failed is left as it is.
func (c *Comm) PeerLost(reason error) {
	c.mu.Lock()
	failed := c.err != nil
	c.mu.Unlock()
	if failed {
		return
	}
	c.fail(fmt.Errorf("nccl: rank %d: %w: %w", c.rank, collective.ErrPeerLost, reason))
	if c.lib.CanShrink() {
		c.mu.Lock()
		c.keep = !c.released
		c.mu.Unlock()
		return
	}
	c.teardown(true)
}

// CanShrink reports whether Shrink can work here (NCCL >= 2.27).
func (c *Comm) CanShrink() bool { return c.lib.CanShrink() }

// Shrinkable reports whether Shrink may still be tried on c: the library
// has ncclCommShrink and c still holds its NCCL communicator (it was not
// closed, aborted or shrunk already). A Comm that failed with ErrPeerLost
// keeps its communicator when the library can shrink; a local fault, a
// cancelled operation or Close gives it up. ncclCommShrink is collective
// over the survivors, so a rank offers to shrink only when this holds: one
// whose Shrink would fail at once would leave the others waiting in theirs
// until InitTimeout.
func (c *Comm) Shrinkable() bool {
	if !c.lib.CanShrink() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.released && c.handle != 0
}

// ShrunkRank is the rank that rank gets in a communicator shrunk by
// excluding the ranks in exclude: NCCL keeps the survivors in order and
// closes the gaps. It is -1 when rank itself is excluded. The glue uses
// Shrink only when this matches the rank the rendezvous gave the new world.
func ShrunkRank(rank int, exclude []int) int {
	below := map[int]bool{}
	for _, x := range exclude {
		if x == rank {
			return -1
		}
		if x >= 0 && x < rank {
			below[x] = true
		}
	}
	return rank - len(below)
}

// Shrink makes the communicator of the surviving ranks, excluding the ranks
// in exclude (ranks of this Comm), with ncclCommShrink and
// NCCL_SHRINK_ABORT: NCCL first terminates the operations in flight on this
// Comm, then builds the new one without a full re-initialisation. Every
// survivor calls it with the same exclude list; the excluded ranks do not.
//
// It may be called after a failure wrapping ErrPeerLost, or from another
// goroutine while a collective is in flight (a membership change): that
// collective then fails with ErrPeerLost. Either way this Comm is finished
// afterwards (Close it; that is cheap). The new Comm's Rank is
// ShrunkRank(c.Rank(), exclude). Without ncclCommShrink the error wraps
// ErrShrinkUnsupported and the caller makes a new communicator with New.
func (c *Comm) Shrink(ctx context.Context, exclude []int) (*Comm, error) {
	if !c.lib.CanShrink() {
		return nil, fmt.Errorf("nccl: rank %d: shrink: %w (loaded %v)", c.rank, ErrShrinkUnsupported, c.lib.Version())
	}
	ex := slices.Clone(exclude)
	slices.Sort(ex)
	ex = slices.Compact(ex)
	for _, x := range ex {
		if x < 0 || x >= c.size {
			return nil, fmt.Errorf("nccl: rank %d: shrink: excluded rank %d out of range [0, %d)", c.rank, x, c.size)
		}
	}
	if len(ex) == 0 || len(ex) >= c.size {
		return nil, fmt.Errorf("nccl: rank %d: shrink: excluding %d of %d ranks leaves no change or nobody", c.rank, len(ex), c.size)
	}
	newRank := ShrunkRank(c.rank, ex)
	if newRank < 0 {
		return nil, fmt.Errorf("nccl: rank %d: shrink: this rank is in the exclude list %v; excluded ranks do not call Shrink", c.rank, ex)
	}

	c.mu.Lock()
	if c.released || c.handle == 0 {
		c.mu.Unlock()
		return nil, fmt.Errorf("nccl: rank %d: shrink: the communicator was already released (closed or aborted); make a new one with New", c.rank)
	}
	c.released = true
	parent := c.handle
	c.handle = 0
	if c.err == nil {
		c.err = fmt.Errorf("nccl: rank %d: ranks %v excluded by Shrink: %w", c.rank, ex, collective.ErrPeerLost)
		close(c.dead)
	}
	c.mu.Unlock()

	child, err := c.shrink(ctx, parent, ex, newRank)
	// NCCL_SHRINK_ABORT has terminated the parent's operations; free it.
	go func() {
		c.tornErr = c.release(parent, true)
		close(c.torn)
	}()
	if err != nil {
		return nil, err
	}
	return child, nil
}

// shrink runs ncclCommShrink on parent and waits for the child.
func (c *Comm) shrink(ctx context.Context, parent uintptr, ex []int, newRank int) (*Comm, error) {
	cfg := Config{
		Device: c.device, Context: 0, Stream: c.stream, Epoch: c.epoch,
		InitTimeout: c.initTimeout, OpTimeout: c.opTimeout, CloseTimeout: c.closeTimeout,
	}
	if c.cudev < 0 {
		cfg.Context = c.bind.ctx // the caller's context, shared
	}
	size := c.size - len(ex)
	log := c.log.With(zap.Int("shrunk_rank", newRank), zap.Int("shrunk_size", size))
	child, err := newComm(c.lib, c.cu, &cfg, newRank, size, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.initTimeout)
	defer cancel()
	exC := cInts(ex)
	defer freeInts(exC) // after the wait: a non-blocking shrink may read it late
	start := time.Now()
	h, res := c.lib.fns.shrinkCall(child.bind, parent, exC, len(ex), child.conf, ncclShrinkAbort)
	child.mu.Lock()
	child.handle = h
	child.mu.Unlock()
	if err := c.callErr("ncclCommShrink", res, parent); err != nil || h == 0 {
		if err == nil {
			err = errors.New("ncclCommShrink returned no communicator")
		}
		child.fail(fmt.Errorf("nccl: rank %d: shrink excluding %v: %w", c.rank, ex, err))
		return nil, child.abandon(nil)
	}
	if err := child.wait(ctx, "shrink", false); err != nil {
		return nil, child.abandon(err)
	}
	if got, r := c.lib.fns.commInt(c.lib.fns.commUserRank, h); r == Success && got != newRank {
		log.Warn("nccl: shrunk rank differs from the expected one; using NCCL's", zap.Int("nccl_rank", got))
		child.rank = got
	}
	if got, r := c.lib.fns.commInt(c.lib.fns.commCount, h); r == Success && got != size {
		log.Warn("nccl: shrunk size differs from the expected one; using NCCL's", zap.Int("nccl_size", got))
		child.size = got
	}
	log.Info("nccl: communicator shrunk", zap.Ints("excluded", ex), zap.Duration("took", time.Since(start)))
	return child, nil
}

// initUnbound creates a one-rank communicator with no CUDA context bound
// and waits for it: what New does, minus the driver. It exists to check, on
// machines without a GPU, that NCCL's own failure comes back as a clear
// error (it does not crash); the communicator is aborted either way.
func (l *Library) initUnbound(timeout time.Duration) error {
	id, err := l.NewUniqueID()
	if err != nil {
		return err
	}
	conf := newConfig(l.Version())
	defer freeConfig(conf)
	h, res := l.fns.commInit(binder{}, 1, &id, 0, conf)
	defer func() {
		if h != 0 {
			l.fns.commCall(l.fns.commAbort, binder{}, h)
		}
	}()
	if res.code != Success && res.code != InProgress {
		return l.errorf("ncclCommInitRankConfig", res.code, h)
	}
	deadline := time.Now().Add(timeout)
	for h != 0 {
		state, res := l.fns.asyncError(binder{}, h)
		switch {
		case res.code != Success:
			return l.errorf("ncclCommGetAsyncError", res.code, h)
		case state == Success:
			return nil
		case state != InProgress:
			return l.errorf("ncclCommInitRankConfig", state, h)
		case time.Now().After(deadline):
			return fmt.Errorf("ncclCommInitRankConfig: still in progress after %v", timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
