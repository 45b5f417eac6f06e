package ring

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// writer is the goroutine that owns the send side of the connection to the
// right neighbour. Operations queue frames without ever blocking (the queue
// is unbounded, but it only holds headers and slices of the caller's buffer,
// a few per MiB), so the receiving goroutine is never stuck behind a send:
// that is what keeps a ring of blocking sockets from deadlocking.
type writer struct {
	conn    net.Conn
	le      bool
	scratch []byte // encoding buffer, big-endian hosts only

	mu     sync.Mutex
	queue  []frame
	pushed uint64 // frames ever queued; guarded by mu

	// written counts frames handed to the kernel. Frames are written in
	// queue order, so frame i (push's result) is out of the caller's buffer
	// once written > i.
	written atomic.Uint64

	wake    chan struct{}   // cap 1: the queue is not empty
	flushed chan struct{}   // cap 1: an operation's last frame was written
	stop    <-chan struct{} // the Comm failed or closed
	onErr   func(error)
	done    chan struct{} // closed when run returns
}

type frame struct {
	hdr  [headerLen]byte
	data []float32
	last bool
}

func newWriter(conn net.Conn, le bool, segElems int, stop <-chan struct{}, onErr func(error)) *writer {
	w := &writer{
		conn: conn, le: le,
		wake: make(chan struct{}, 1), flushed: make(chan struct{}, 1),
		stop: stop, onErr: onErr, done: make(chan struct{}),
	}
	if !le {
		w.scratch = make([]byte, 4*segElems)
	}
	return w
}

// push queues one frame and returns its index. last marks the operation's
// final frame: once it is written, flushed is signalled.
func (w *writer) push(h header, data []float32, last bool) uint64 {
	f := frame{data: data, last: last}
	h.put(&f.hdr)
	w.mu.Lock()
	w.queue = append(w.queue, f)
	i := w.pushed
	w.pushed++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return i
}

// waitWritten waits until frame i has been written, or stop. The wait is
// normally zero iterations (see Comm.allReduce), so it spins politely
// rather than setting up a channel per frame.
func (w *writer) waitWritten(i uint64) bool {
	for spins := 0; w.written.Load() <= i; spins++ {
		select {
		case <-w.stop:
			return false
		default:
		}
		if spins < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
	}
	return true
}

func (w *writer) run() {
	defer close(w.done)
	var batch []frame
	for {
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		batch, w.queue = w.queue, batch[:0]
		w.mu.Unlock()
		for i := range batch {
			if err := w.write(&batch[i]); err != nil {
				w.onErr(err)
				return
			}
			w.written.Add(1)
			if batch[i].last {
				select {
				case w.flushed <- struct{}{}:
				default:
				}
			}
		}
		clear(batch) // drop references to the caller's buffer
	}
}

func (w *writer) write(f *frame) error {
	var payload []byte
	if w.le {
		payload = asBytes(f.data)
	} else {
		payload = w.scratch[:4*len(f.data)]
		encodeLE(payload, f.data)
	}
	bufs := net.Buffers{f.hdr[:], payload} // one writev: header and payload together
	_, err := bufs.WriteTo(w.conn)
	return err
}
