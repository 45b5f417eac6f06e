package node

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// SecretEnv is the environment variable that carries the gossip secret when
// no --secret-file is given.
const SecretEnv = "PEERTUNE_SECRET"

// Config says who this node is, where it listens, whom it joins, how it
// proves it belongs to the job, and how rendezvous forms a world.
// Start it from DefaultConfig() and set what the job needs.
type Config struct {
	// Name is this node's unique id (memberlist name, Meta.ID, rank order).
	// Two processes with one name would fight over one memberlist entry, so
	// the default adds the pid and a random suffix to the hostname.
	Name string
	// Incarnation names this process of Name (Meta.Inc): a member counts
	// for the last world's majority only as the same incarnation. 0 (the
	// default) picks a new random one: a restart under the same name is
	// then a new member. A caller that can prove it succeeds a process of
	// Name that died (cmd/peertune: an identity file in the node's output
	// directory, held under an exclusive lock for the life of the process,
	// so that a live predecessor cannot be succeeded) passes the dead
	// process's incarnation, so that its restart counts as that member.
	// A process that left on purpose (Leave) must not be succeeded this way.
	Incarnation uint64

	// BindAddr/BindPort is where gossip listens (TCP and UDP, same port).
	// BindPort 0 takes a free port from the kernel (tests); it is then also
	// the advertised port, so AdvertisePort must be 0 too.
	BindAddr string
	BindPort int

	// AdvertiseAddr/AdvertisePort is what peers are told to dial. Empty
	// AdvertiseAddr means "the bind address", which is only allowed when
	// BindAddr is a specific IP: binding 0.0.0.0 or :: requires an explicit
	// advertise address, because memberlist would otherwise guess a private
	// IP, and on a multi-homed training node the guess is often the wrong
	// network (management instead of the fabric). AdvertisePort 0 means the
	// bind port.
	AdvertiseAddr string
	AdvertisePort int

	// Seeds are host:port gossip addresses of nodes to join. Empty: this node
	// starts a cluster of its own and waits to be joined.
	Seeds []string

	// SecretKey is the AES key (16, 24 or 32 bytes) that encrypts and
	// authenticates all gossip and rendezvous traffic. Derive it from an
	// operator's secret of any length with DeriveKey (SHA-256 -> 32 bytes,
	// AES-256). Nodes with a different key or none cannot join.
	SecretKey []byte
	// Insecure allows running without SecretKey. Only for single-host tests:
	// without a key anyone who can reach the port can join the job.
	Insecure bool

	// Endpoint, Device, Budget, NCCL and JobHash seed this node's Meta.
	// Endpoint is the collective's host:port (not the gossip address).
	Endpoint string
	Device   string
	Budget   uint64
	NCCL     bool
	// JobHash identifies the job configuration; see HashJobConfig. Nodes
	// whose hash differs are refused by rendezvous.
	JobHash string

	// MinNodes is the fewest nodes a world may have (--min-nodes).
	MinNodes int
	// WorldSize, when > 0, is the size rendezvous waits for (--world-size);
	// after RendezvousTimeout it starts with whatever is there (>= MinNodes).
	WorldSize int
	// RendezvousTimeout bounds the wait for WorldSize nodes.
	RendezvousTimeout time.Duration
	// AllowMinority lets a world form without a strict majority of the last
	// committed world: the operator's explicit override of the split-brain
	// guard (set only when --min-nodes was given on purpose).
	AllowMinority bool

	// JoinTimeout bounds how long Join keeps retrying the seeds.
	JoinTimeout time.Duration

	// Failure-detection and gossip tuning handed to memberlist (SWIM +
	// Lifeguard). See DefaultConfig for the reasons behind each value.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration

	// ReconnectInterval is how often the node tries to reach again the
	// members it lost without their leaving on purpose (failure detection,
	// a partition). memberlist alone stops talking to a dead node after
	// GossipToTheDeadTime (30 s), so without this a partition that outlasts
	// it would never heal: each side would go on as a cluster of its own.
	ReconnectInterval time.Duration

	// Observer makes the node a watcher (`peertune status`): it advertises
	// StateObserver, which rendezvous never counts, and Rendezvous refuses
	// to run on it.
	Observer bool

	// memberlistHook, when set, adjusts memberlist's configuration just
	// before Create. Tests only: fault injection (a Transport that drops
	// traffic to simulate a partition) and timings memberlist keeps private.
	memberlistHook func(*memberlist.Config)

	// EventBuffer is the capacity of the Events channel. When it is full,
	// further events are dropped (never blocking memberlist) and counted;
	// the consumer sees a gap in Event.Seq and should re-read Members().
	EventBuffer int
}

// DefaultConfig returns a configuration for a LAN training cluster. Every
// default says why it is what it is; the memberlist knobs not listed here keep
// memberlist.DefaultLANConfig()'s values.
func DefaultConfig() Config {
	return Config{
		// Unique per process: hostname alone collides when several ranks
		// share a host (one process per GPU, or tests).
		Name: DefaultName(),
		// Loopback, so that nothing is exposed until the operator says which
		// interface the job runs on. Multi-host jobs must set it.
		BindAddr: "127.0.0.1",
		// memberlist's conventional port; change it where a Consul or Serf
		// agent on the same host already holds 7946.
		BindPort: 7946,
		// A world of one is a valid job (single-node fine-tuning).
		MinNodes: 1,
		// 0: no target size; start with whoever is ready.
		WorldSize: 0,
		// Schedulers start a job's pods or tasks within minutes of each other
		// (image pulls, node provisioning). Starting smaller and growing later
		// costs a re-rendezvous, so wait long enough for stragglers to show up.
		RendezvousTimeout: 5 * time.Minute,
		// Seeds of the same job start at about the same time; one that is not
		// up yet is retried rather than failing the whole job.
		JoinTimeout: time.Minute,
		// Twice memberlist's LAN rate: a probe every 500 ms. Every second a
		// dead node goes unnoticed stalls every survivor (they wait in the
		// all-reduce, then in rendezvous), so detection speed is worth a few
		// more tiny UDP packets; a probe costs nothing next to the gradients.
		// The trade-off: on a host whose CPUs are saturated, slower probing
		// would suspect a busy node less often.
		ProbeInterval: 500 * time.Millisecond,
		// A LAN round trip is well under a millisecond; 250 ms still leaves
		// room for UDP queued behind bulk all-reduce traffic and for a busy
		// CPU. It must stay below ProbeInterval, which has to fit the
		// indirect probes too.
		ProbeTimeout: 250 * time.Millisecond,
		// memberlist's LAN value. A suspect is declared dead after about
		// SuspicionMult x ProbeInterval (2 s here, scaled up by log10 of the
		// cluster size, and shortened by Lifeguard's confirmations): with
		// the probe above, a silent node is out of the world in about 3 s on
		// a small cluster. A lower multiplier risks declaring a node that
		// was only paused (GC, swapped, CPU-starved) dead, which forces a new
		// world; a false alarm costs one redone step, no data.
		SuspicionMult: 4,
		// memberlist's LAN value: metadata (state, step, step time) reaches
		// every node of a few dozen within about a second; gossip packets are
		// tiny next to the gradients.
		GossipInterval: 200 * time.Millisecond,
		// A node that lost part of the cluster (a partition) waits idle
		// until it is reachable again; a few seconds of waiting after the
		// network heals are nothing next to the partition, and one dial
		// every 5 s per lost member costs nothing on a LAN.
		ReconnectInterval: 5 * time.Second,
		// Membership changes come in bursts of at most a few per node; 256
		// absorbs a whole cluster joining at once while the consumer is busy.
		EventBuffer: 256,
	}
}

// DefaultName returns hostname-pid-suffix: unique per process even when many
// processes share a host, and readable in logs. The hostname is cut to 64
// bytes so the name fits MaxIDLen.
func DefaultName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i] // the short name is enough and keeps rank order readable
	}
	if len(host) > 64 {
		host = host[:64]
	}
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux (Go 1.24+)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// DeriveKey turns an operator's secret of any length into the 32-byte AES-256
// key memberlist wants: SHA-256(secret). Every node of a job must derive from
// the same secret bytes (trailing newlines are the caller's business; see
// ReadSecret). A hash is not a password KDF: use a long random secret
// (e.g. `openssl rand -hex 32`), not a word.
func DeriveKey(secret []byte) []byte {
	sum := sha256.Sum256(secret)
	return sum[:]
}

// ReadSecret returns the job's gossip secret: the contents of path when path
// is non-empty (--secret-file; one trailing newline is removed, so `echo` and
// editors give the same key), else the value of PEERTUNE_SECRET as read by
// getenv (pass os.Getenv). An empty secret is an error: it would silently
// mean "no encryption".
func ReadSecret(path string, getenv func(string) string) ([]byte, error) {
	var secret []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read secret file: %w", err)
		}
		b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
		if len(b) == 0 {
			return nil, fmt.Errorf("secret file %s is empty", path)
		}
		secret = b
	} else if getenv != nil {
		secret = []byte(getenv(SecretEnv))
	}
	if len(secret) == 0 {
		return nil, errors.New("no gossip secret: pass --secret-file or set " + SecretEnv)
	}
	return secret, nil
}

// HashJobConfig returns the JobHash of a canonical job configuration: hex
// SHA-256. The caller decides what is canonical (which fields must agree
// across nodes: model, method, data, seed, schedule...).
func HashJobConfig(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])
}

// Validate checks the configuration without touching the network.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("config: empty node name")
	}
	if len(c.Name) > MaxIDLen {
		return fmt.Errorf("config: node name is %d bytes, limit %d", len(c.Name), MaxIDLen)
	}
	bind := net.ParseIP(c.BindAddr)
	if bind == nil {
		return fmt.Errorf("config: bind address %q is not an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("config: bind port %d out of range", c.BindPort)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return fmt.Errorf("config: advertise port %d out of range", c.AdvertisePort)
	}
	if c.AdvertiseAddr == "" {
		if bind.IsUnspecified() {
			return fmt.Errorf("config: binding %s needs an explicit advertise address: peers must be told which of this host's addresses to dial, and guessing picks the wrong network on multi-homed hosts", c.BindAddr)
		}
	} else {
		adv := net.ParseIP(c.AdvertiseAddr)
		if adv == nil {
			return fmt.Errorf("config: advertise address %q is not an IP address", c.AdvertiseAddr)
		}
		if adv.IsUnspecified() {
			return fmt.Errorf("config: advertise address %s is unspecified; give the address peers should dial", c.AdvertiseAddr)
		}
	}
	if c.BindPort == 0 && c.AdvertisePort != 0 {
		return fmt.Errorf("config: advertise port %d with bind port 0: a kernel-chosen port cannot be advertised as a fixed one", c.AdvertisePort)
	}
	switch len(c.SecretKey) {
	case 16, 24, 32:
	case 0:
		if !c.Insecure {
			return errors.New("config: no gossip key: pass --secret-file or set " + SecretEnv + " (every node of the job needs the same secret)")
		}
	default:
		return fmt.Errorf("config: gossip key is %d bytes; AES needs 16, 24 or 32 (use DeriveKey on the secret)", len(c.SecretKey))
	}
	if c.MinNodes < 1 {
		return fmt.Errorf("config: min-nodes %d < 1", c.MinNodes)
	}
	if c.WorldSize < 0 {
		return fmt.Errorf("config: world-size %d < 0", c.WorldSize)
	}
	if c.WorldSize > 0 && c.MinNodes > c.WorldSize {
		return fmt.Errorf("config: min-nodes %d > world-size %d", c.MinNodes, c.WorldSize)
	}
	if c.RendezvousTimeout < 0 || c.JoinTimeout <= 0 {
		return fmt.Errorf("config: rendezvous timeout %s and join timeout %s must be >= 0 and > 0", c.RendezvousTimeout, c.JoinTimeout)
	}
	if c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.GossipInterval <= 0 || c.SuspicionMult < 1 {
		return errors.New("config: probe interval, probe timeout, gossip interval and suspicion multiplier must be positive")
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("config: probe timeout %s must be below probe interval %s (the indirect probes need the rest of the interval)", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.ReconnectInterval <= 0 {
		return fmt.Errorf("config: reconnect interval %s must be positive", c.ReconnectInterval)
	}
	if c.EventBuffer < 1 {
		return fmt.Errorf("config: event buffer %d < 1", c.EventBuffer)
	}
	m := Meta{ID: c.Name, Endpoint: c.Endpoint, Device: c.Device, JobHash: c.JobHash}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// RendezvousOptions returns the rendezvous options this configuration implies,
// with the protocol timings at their defaults.
func (c *Config) RendezvousOptions() RendezvousOptions {
	o := DefaultRendezvousOptions()
	o.MinNodes = c.MinNodes
	o.WorldSize = c.WorldSize
	o.Timeout = c.RendezvousTimeout
	o.AllowMinority = c.AllowMinority
	return o
}
