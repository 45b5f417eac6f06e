package ring

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config describes one rank of one ring. Start from DefaultConfig and set the
// identity fields (Rank, Size, Epoch, Peers, Secret); the rest have defaults
// chosen for a LAN or a single host.
type Config struct {
	// Rank is this rank's index in [0, Size); ring order is rank order.
	Rank int
	// Size is the number of ranks. A ring of one opens no sockets.
	Size int
	// Epoch identifies the world (node.World.Epoch). Both ends of every
	// connection must agree on it, so a rank left over from an earlier world
	// cannot join (or poison) this one.
	Epoch uint64
	// Peers[i] is the address ("host:port") rank i listens on. Rank r dials
	// Peers[r+1 mod Size] (its right neighbour) and accepts a connection from
	// rank r-1 mod Size (its left neighbour). Unused when Size is 1.
	Peers []string
	// ListenAddr is where this rank listens. Empty means Peers[Rank], which is
	// right whenever the advertised address is a local one.
	ListenAddr string
	// Listener, when not nil, is used instead of listening on ListenAddr: the
	// caller binds first (for example to port 0) and advertises the real
	// address. New takes ownership and closes it, whatever happens.
	Listener net.Listener
	// Secret is the job secret. Every connection is authenticated by an
	// HMAC-SHA256 challenge-response over it; it never crosses the wire.
	// New copies it. It must not be empty; 32 random bytes are ideal.
	Secret []byte

	// ConnectTimeout bounds how long New waits for both neighbours (dial with
	// retries, accept, handshakes).
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds one connection's handshake (and one dial
	// attempt), so a stranger that connects and stays silent is dropped.
	HandshakeTimeout time.Duration
	// RetryInterval is the pause between dial attempts while the right
	// neighbour is not listening yet, or still at an older epoch.
	RetryInterval time.Duration
	// MaxPendingHandshakes caps concurrent inbound handshakes; connections
	// beyond it are closed at once, so a flood of strangers costs bounded
	// memory and goroutines while the real neighbour can still get in.
	MaxPendingHandshakes int
	// SegmentBytes is the pipelining unit: chunks are sent in segments of at
	// most this many bytes (rounded down to whole float32s), and a received
	// segment is reduced and forwarded while the next one is in flight.
	// It shapes the wire frames, so every rank must use the same value; the
	// handshake refuses a neighbour that does not.
	SegmentBytes int
	// OpTimeout, when positive, bounds every collective on top of its ctx.
	// Zero means only the ctx bounds it.
	OpTimeout time.Duration
	// KeepAlive configures TCP keepalive on the ring's connections. It is how
	// a peer whose host vanished (no FIN, no RST) is noticed while this rank
	// waits for data.
	KeepAlive net.KeepAliveConfig
}

// DefaultConfig returns a Config with every tuning field at its default and
// the identity fields (Rank, Size, Epoch, Peers, Secret) empty.
func DefaultConfig() Config {
	return Config{
		// Peers come up at different times (containers scheduled seconds
		// apart, gossip taking a few rounds to converge), so New waits a
		// while before declaring the world unformable.
		ConnectTimeout: 60 * time.Second,
		// A handshake is four small messages: milliseconds on a LAN. Five
		// seconds tolerates a loaded host yet drops a silent stranger fast.
		HandshakeTimeout: 5 * time.Second,
		// Refused connections are cheap to retry; 100ms adds at most that
		// much to ring formation once the neighbour is up.
		RetryInterval: 100 * time.Millisecond,
		// Only one inbound connection is wanted; a few slots let it in even
		// while strangers hold some, without unbounded goroutines.
		MaxPendingHandshakes: 8,
		// 1 MiB segments: big enough that per-frame costs (a 40-byte header,
		// a syscall, a wakeup) are noise, small enough that the pipeline
		// fills fast and buffers of a few MiB still overlap send and reduce.
		SegmentBytes: 1 << 20,
		// A backstop against a peer that is alive but stuck (SIGSTOP, a hung
		// trainer) which no socket error reveals. Generous because ranks
		// enter a collective at different times and the fastest waits for the
		// slowest rank's whole forward/backward pass inside it.
		OpTimeout: 10 * time.Minute,
		// First probe after 5s idle, then every 2s, dead after 3 misses: a
		// vanished host is noticed in about 11s rather than the OS default
		// of hours.
		KeepAlive: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3},
	}
}

// check reports the first problem with c, as an error naming the field.
func (c *Config) check() error {
	switch {
	case c.Size < 1:
		return fmt.Errorf("ring: config: Size %d < 1", c.Size)
	case c.Rank < 0 || c.Rank >= c.Size:
		return fmt.Errorf("ring: config: Rank %d out of range [0, %d)", c.Rank, c.Size)
	case c.Size == 1:
		return nil // nothing else is used
	case len(c.Peers) != c.Size:
		return fmt.Errorf("ring: config: %d Peers for Size %d", len(c.Peers), c.Size)
	case len(c.Secret) == 0:
		return errors.New("ring: config: empty Secret: a ring without a secret would accept anyone")
	case c.ConnectTimeout <= 0 || c.HandshakeTimeout <= 0 || c.RetryInterval <= 0:
		return fmt.Errorf("ring: config: ConnectTimeout %v, HandshakeTimeout %v and RetryInterval %v must be positive (start from DefaultConfig)",
			c.ConnectTimeout, c.HandshakeTimeout, c.RetryInterval)
	case c.MaxPendingHandshakes < 1:
		return fmt.Errorf("ring: config: MaxPendingHandshakes %d < 1", c.MaxPendingHandshakes)
	case c.SegmentBytes < 4 || c.SegmentBytes > 1<<30:
		return fmt.Errorf("ring: config: SegmentBytes %d outside [4, 1GiB]", c.SegmentBytes)
	case c.OpTimeout < 0:
		return fmt.Errorf("ring: config: negative OpTimeout %v", c.OpTimeout)
	}
	for i, p := range c.Peers {
		if p == "" {
			return fmt.Errorf("ring: config: Peers[%d] is empty", i)
		}
	}
	return nil
}
