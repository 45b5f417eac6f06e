package ring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Ring formation: each rank dials its right neighbour (retrying, because
// peers start at different times) and, concurrently, accepts from its left
// neighbour. Both connections are authenticated (handshake.go) before New
// returns. Every inbound connection gets its own handshake goroutine under a
// deadline, so strangers — garbage, silence, wrong secret, wrong epoch — are
// dropped without delaying the real neighbour, and the listener keeps
// accepting until that neighbour has authenticated.

// fatalDialError reports whether retrying the dial cannot help: the peer
// proved it has a different secret, or it is in a newer epoch (so this rank
// is the stale one), or it disagrees about the ring's shape.
func fatalDialError(err error, myEpoch uint64) bool {
	var rej *rejectedError
	if errors.As(err, &rej) {
		switch rej.code {
		case rejectEpoch:
			// A peer still at an older epoch may yet move on: retry.
			return rej.peerEpoch > myEpoch
		case rejectAuth, rejectTopology, rejectProtocol:
			return true
		}
	}
	return errors.Is(err, ErrAuth) || errors.Is(err, ErrHandshake)
}

// dialRight connects to and authenticates with the right neighbour.
func dialRight(ctx context.Context, cfg *Config, l *hsLocal, log *zap.Logger) (net.Conn, error) {
	right := Right(cfg.Rank, cfg.Size)
	addr := cfg.Peers[right]
	d := net.Dialer{Timeout: cfg.HandshakeTimeout}
	var lastErr error
	for attempt := 1; ; attempt++ {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			err = withDeadline(ctx, conn, cfg.HandshakeTimeout, func() error { return dialHandshake(conn, l, right) })
			if err == nil {
				return conn, nil
			}
			conn.Close()
			if fatalDialError(err, cfg.Epoch) {
				return nil, fmt.Errorf("dial right neighbour rank %d at %s: %w", right, addr, err)
			}
			log.Debug("ring: handshake with right neighbour failed; retrying",
				zap.Int("peer", right), zap.String("addr", addr), zap.Int("attempt", attempt), zap.Error(err))
		}
		lastErr = err
		t := time.NewTimer(cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("dial right neighbour rank %d at %s: gave up after %d attempts (%w); last error: %w",
				right, addr, attempt, ctx.Err(), lastErr)
		case <-t.C:
		}
	}
}

// acceptLeft accepts connections on ln until one authenticates as the left
// neighbour. It closes ln before returning (which is also how ctx interrupts
// Accept) and waits for every handshake goroutine it started.
func acceptLeft(parent context.Context, cfg *Config, l *hsLocal, ln net.Listener, log *zap.Logger) (net.Conn, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	left := Left(cfg.Rank, cfg.Size)
	won := make(chan net.Conn, 1)
	var (
		lastMu  sync.Mutex
		lastErr error
		pending atomic.Int32
		wg      sync.WaitGroup
	)
	acceptDone := make(chan error, 1)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				acceptDone <- err
				return
			}
			if int(pending.Add(1)) > cfg.MaxPendingHandshakes {
				pending.Add(-1)
				log.Warn("ring: too many pending handshakes; dropping connection", zap.Stringer("from", conn.RemoteAddr()))
				conn.Close()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer pending.Add(-1)
				err := withDeadline(ctx, conn, cfg.HandshakeTimeout, func() error { return acceptHandshake(conn, l) })
				if err != nil {
					conn.Close()
					// Log every refusal with a reason of its own; stay quiet
					// about handshakes this function cut short itself.
					if ctx.Err() == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
						log.Warn("ring: refused inbound connection", zap.Int("want_rank", left),
							zap.Stringer("from", conn.RemoteAddr()), zap.Error(err))
						lastMu.Lock()
						lastErr = fmt.Errorf("from %s: %w", conn.RemoteAddr(), err)
						lastMu.Unlock()
					}
					return
				}
				select {
				case won <- conn:
					cancel() // stop accepting; the others lose
				default:
					conn.Close() // a second winner cannot happen unless a peer is duplicated
				}
			}()
		}
	}()

	var (
		conn     net.Conn
		aerr     error
		acceptOK = true
	)
	select {
	case conn = <-won:
	case <-ctx.Done():
	case aerr = <-acceptDone: // the listener failed on its own; reported below
		acceptOK = false
	}
	cancel()
	ln.Close()
	if acceptOK {
		aerr = <-acceptDone // Accept returns once ln is closed
	}
	// The accept goroutine has exited, so wg.Add is no longer called.
	if conn == nil {
		// A winner may have raced the cancellation.
		wg.Wait()
		select {
		case conn = <-won:
		default:
		}
	}
	wg.Wait()
	if conn != nil {
		return conn, nil
	}
	cause := parent.Err()
	if cause == nil {
		cause = aerr // the listener failed on its own
	}
	lastMu.Lock()
	defer lastMu.Unlock()
	if lastErr != nil {
		return nil, fmt.Errorf("accept left neighbour rank %d on %s: none authenticated (%w); last refused: %w",
			left, ln.Addr(), cause, lastErr)
	}
	return nil, fmt.Errorf("accept left neighbour rank %d on %s: none authenticated: %w", left, ln.Addr(), cause)
}

// withDeadline runs f with conn's deadline set to now+d and cleared after;
// cancelling ctx moves the deadline to the past so f returns at once.
func withDeadline(ctx context.Context, conn net.Conn, d time.Duration, f func() error) error {
	if err := conn.SetDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err := f()
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	return err
}
