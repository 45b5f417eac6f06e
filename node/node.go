package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// ErrGossipKey is returned (wrapped) by Join when seeds answered but every
// answer failed authentication: the keys differ or one side has none.
var ErrGossipKey = errors.New("no seed accepted our gossip key (wrong or missing --secret-file / " + SecretEnv + "?)")

// ErrShutdown is returned by calls on a node that has been shut down.
var ErrShutdown = errors.New("node is shut down")

// ErrLeft is returned (wrapped) by Rendezvous, and by UpdateMeta changes of
// State, once Leave has been called: the node told its peers it will not
// train again, and they stopped counting it.
var ErrLeft = errors.New("node has left the cluster")

// EventKind says what happened to a member.
type EventKind int

const (
	EventJoin EventKind = iota
	EventUpdate
	EventLeave
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one membership change. Seq numbers every event this node
// generated, from 1, so a consumer sees a gap when events were dropped.
type Event struct {
	Seq  uint64
	Kind EventKind
	// Member is the node as of the event. A leave event does not say
	// whether the node called Leave or was declared dead: memberlist does
	// not pass that on (its Node.State is never updated).
	Member Member
}

// Node is this process's membership in the job: a memberlist instance, the
// metadata it advertises, the members it knows and the rendezvous inbox.
//
// All methods are safe for concurrent use. Rendezvous may run at most once at
// a time per node.
type Node struct {
	cfg Config
	log *zap.Logger
	ctx context.Context
	ml  *memberlist.Memberlist
	// addr is our advertised gossip address, read once at Start: memberlist
	// hands out pointers into its node map, so we copy what we need while
	// its lock is held (or before anyone else can change it).
	addr string

	// mu guards the fields below it. It is taken inside memberlist's event
	// callbacks, which run under memberlist's own lock, so nothing may call
	// into memberlist while holding mu.
	mu      sync.Mutex
	meta    Meta
	encoded []byte
	members map[string]Member
	targets map[string]*memberlist.Node // name -> address copy for SendReliable
	events  chan Event
	seq     uint64
	dropped uint64
	closed  bool

	// lost: members gone without leaving on purpose (see reconnectLoop).
	// departed: the processes (ID and incarnation) that told us they leave
	// on purpose, by their notice (Leave sends one: their Leaving metadata
	// may never arrive, see Leave) or their Leaving metadata, with when we
	// heard; what View.Departed reports (see departures). A new process
	// under a departed name does not end its predecessor's entry: it has
	// another incarnation, and the predecessor never comes back.
	lost     map[string]lostMember
	departed map[Departure]time.Time

	changed   chan struct{} // cap 1: "the view may have changed"
	metaDirty chan struct{} // cap 1: "gossip our meta again"
	inbox     chan inbound  // rendezvous messages from peers
	done      chan struct{}

	lifeMu   sync.Mutex // serialises Leave and Shutdown (memberlist panics on Leave after Shutdown)
	shutdown bool
	left     atomic.Bool // Leave was called: stop reconnecting
	rdvBusy  atomic.Bool
}

// inboxSize bounds the rendezvous messages queued between memberlist's
// receive goroutines and Rendezvous. A rendezvous exchanges a few messages
// per peer per proposal; overflow drops the message and the leader's
// proposal times out and is retried.
const inboxSize = 256

// metaUpdateTimeout bounds memberlist.UpdateNode, which waits until the new
// metadata has been handed to at least one peer.
const metaUpdateTimeout = 5 * time.Second

// Start validates cfg, starts gossip on the bind address, and joins cfg.Seeds
// (see Join) if there are any. ctx bounds this join and every later Join; it
// does not stop the node: call Leave and Shutdown. logger may be nil.
func Start(ctx context.Context, cfg Config, logger *zap.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	// Our own copies: the caller may reuse its slices.
	cfg.Seeds = slices.Clone(cfg.Seeds)
	cfg.SecretKey = slices.Clone(cfg.SecretKey)
	n := &Node{
		cfg:       cfg,
		log:       logger.With(zap.String("node", cfg.Name)),
		ctx:       ctx,
		members:   map[string]Member{},
		targets:   map[string]*memberlist.Node{},
		events:    make(chan Event, cfg.EventBuffer),
		changed:   make(chan struct{}, 1),
		metaDirty: make(chan struct{}, 1),
		inbox:     make(chan inbound, inboxSize),
		done:      make(chan struct{}),
	}
	n.lost, n.departed = map[string]lostMember{}, map[Departure]time.Time{}
	n.meta = Meta{
		ID:       cfg.Name,
		Endpoint: cfg.Endpoint,
		Device:   cfg.Device,
		Budget:   cfg.Budget,
		NCCL:     cfg.NCCL,
		JobHash:  cfg.JobHash,
		State:    StateJoining,
		Inc:      cfg.Incarnation,
	}
	if n.meta.Inc == 0 {
		n.meta.Inc = newIncarnation()
	}
	if cfg.Observer {
		n.meta.State = StateObserver
	}
	enc, err := n.meta.Encode()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	n.encoded = enc

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	// Empty AdvertiseAddr with a specific BindAddr: memberlist advertises
	// the bound address and port (Validate rejects the wildcard case).
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cmp.Or(cfg.AdvertisePort, cfg.BindPort)
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.Delegate = (*delegate)(n)
	mc.Events = (*delegate)(n)
	mc.Logger = memberlistLogger(n.log)
	if len(cfg.SecretKey) > 0 {
		kr, err := memberlist.NewKeyring(nil, cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("start %s: keyring: %w", cfg.Name, err)
		}
		mc.Keyring = kr
		// Both already true in DefaultLANConfig; set explicitly because the
		// whole security story rests on them: reject anything not encrypted
		// with our key, and never send in the clear.
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	} else {
		n.log.Warn("gossip is NOT encrypted (insecure mode): anyone who can reach the port can join")
	}
	if cfg.memberlistHook != nil {
		cfg.memberlistHook(mc)
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start %s on %s:%d: %w", cfg.Name, cfg.BindAddr, cfg.BindPort, err)
	}
	n.ml = ml
	n.addr = ml.LocalNode().Address()
	go n.metaLoop()
	go n.reconnectLoop()
	n.log.Info("gossip started", zap.String("addr", n.Addr()), zap.Bool("encrypted", len(cfg.SecretKey) > 0), zap.String("incarnation", fmt.Sprintf("%016x", n.meta.Inc)))

	if len(cfg.Seeds) > 0 {
		if err := n.Join(cfg.Seeds); err != nil {
			n.Shutdown()
			return nil, err
		}
		if len(cfg.Seeds) > 1 {
			go n.seedLoop(cfg.Seeds)
		}
	}
	return n, nil
}

// seedRetryFor bounds how long seedLoop keeps dialling seeds that did not
// answer at start: longer than a rendezvous waits by default (5 minutes);
// a longer RendezvousTimeout extends it, so that every world a slow seed
// could miss has formed by then.
const seedRetryFor = 10 * time.Minute

// seedLoop dials, one by one, every seed until each has answered once.
// Join returns as soon as one seed answers, and processes start in any
// order: a seed that was not listening yet (the first node of a job, slow
// to load its model) would otherwise stay on its own, a second cluster,
// and after the rendezvous timeout both would form a world and train the
// same job twice. Dialling a seed that is already a member costs one state
// exchange.
func (n *Node) seedLoop(seeds []string) {
	pending := slices.Clone(seeds)
	deadline := time.Now().Add(max(seedRetryFor, n.cfg.RendezvousTimeout+time.Minute))
	stopped := func() bool {
		select {
		case <-n.done:
			return true
		default:
			return n.left.Load()
		}
	}
	wait := time.Second
	for len(pending) > 0 && time.Now().Before(deadline) {
		select {
		case <-n.done:
			return
		case <-time.After(wait):
		}
		if n.left.Load() {
			return
		}
		var still []string
		for _, s := range pending {
			if stopped() {
				return // a dial takes up to TCPTimeout: check before each
			}
			joined, err := n.ml.Join([]string{s})
			switch {
			case err == nil && joined > 0:
				n.log.Debug("seed answered", zap.String("seed", s))
			case err != nil && isKeyError(err):
				// Another job's node holds the address: it can never be
				// ours, and every try makes it log a rejected key.
				n.log.Info("a seed answers with another gossip key; no longer dialling it", zap.String("seed", s))
			default:
				still = append(still, s)
			}
		}
		pending = still
		wait = min(2*wait, 5*time.Second)
	}
}

// ID returns this node's unique name.
func (n *Node) ID() string { return n.cfg.Name }

// newIncarnation picks a process's incarnation (Meta.Inc): random, so that
// a restarted process never reuses its predecessor's (a clock or a counter
// on disk could repeat after a crash, or on another host), and non-zero,
// because 0 means "older code, unknown". Two processes of one name sharing
// one, which would let the second count as the first, is a 2^-64 chance.
func newIncarnation() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}

// Addr returns the gossip host:port peers dial (what seeds should list).
func (n *Node) Addr() string { return n.addr }

// Config returns the configuration the node was started with, without the
// secret key (so that logging it cannot leak the key).
func (n *Node) Config() Config {
	c := n.cfg
	c.Seeds = slices.Clone(c.Seeds)
	c.SecretKey = nil
	return c
}

// Join contacts the seeds and merges their view of the cluster. It retries
// with exponential backoff (100 ms doubling to 2 s) until one seed accepts us,
// JoinTimeout passes, or the node's context ends. When every answer failed
// authentication the error wraps ErrGossipKey, so the operator is told to
// check the secret rather than the network.
func (n *Node) Join(seeds []string) error {
	if len(seeds) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.JoinTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	var lastErr error
	keyErrs, attempts := 0, 0
	for {
		select {
		case <-n.done:
			return ErrShutdown
		default:
		}
		joined, err := n.ml.Join(seeds)
		if err == nil && joined > 0 {
			n.log.Info("joined", zap.Strings("seeds", seeds), zap.Int("contacted", joined), zap.Int("members", n.ml.NumMembers()))
			return nil
		}
		if err == nil {
			err = errors.New("no seed contacted")
		}
		attempts++
		lastErr = err
		if isKeyError(err) {
			keyErrs++
		}
		n.log.Debug("join attempt failed", zap.Strings("seeds", seeds), zap.Error(err), zap.Duration("retry_in", backoff))
		select {
		case <-ctx.Done():
			if keyErrs > 0 && keyErrs == attempts {
				return fmt.Errorf("join %s: %w (last error: %v)", strings.Join(seeds, ","), ErrGossipKey, lastErr)
			}
			if keyErrs > 0 {
				return fmt.Errorf("join %s: %w (%d of %d attempts failed authentication; last error: %v)", strings.Join(seeds, ","), ErrGossipKey, keyErrs, attempts, lastErr)
			}
			return fmt.Errorf("join %s: no seed accepted us within %s (%v): %w", strings.Join(seeds, ","), n.cfg.JoinTimeout, context.Cause(ctx), lastErr)
		case <-n.done:
			return ErrShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// isKeyError recognises memberlist's authentication failures in a join
// error: either our decrypt failed, or the seed's did and it said so.
func isKeyError(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "decrypt") || strings.Contains(s, "encrypt")
}

// target returns the address of member id for SendReliable, or nil.
func (n *Node) target(id string) *memberlist.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.targets[id]
}

// Members returns every node this node knows that has not failed or left,
// this node included, sorted by ID. Each carries its decoded metadata (a peer
// whose metadata does not decode is listed with State unknown, so it is never
// eligible). The slice is the caller's.
func (n *Node) Members() []Member {
	n.mu.Lock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		if m.ID == n.cfg.Name {
			m.Meta = n.meta // ours is authoritative even before gossip catches up
		}
		out = append(out, m)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Meta returns this node's current metadata.
func (n *Node) Meta() Meta {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.meta
}

// UpdateMeta applies fn to a copy of this node's metadata and, if the result
// encodes within the size limit, makes it current and schedules it for
// gossip. It does not wait for the gossip (a training loop calls it every
// step): peers see the change within a few gossip intervals. Successive
// updates coalesce. fn must not change ID or Inc (they name this process),
// and only Leave sets or leaves StateLeaving: it is a promise to peers (see
// Leave), so after Leave a change of State fails with ErrLeft.
func (n *Node) UpdateMeta(fn func(*Meta)) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrShutdown
	}
	m := n.meta
	fn(&m)
	if m.ID != n.cfg.Name {
		n.mu.Unlock()
		return fmt.Errorf("update meta: id %q cannot change to %q", n.cfg.Name, m.ID)
	}
	if m.Inc != n.meta.Inc {
		n.mu.Unlock()
		return fmt.Errorf("update meta: incarnation %016x cannot change to %016x", n.meta.Inc, m.Inc)
	}
	if left := n.left.Load(); left != (m.State == StateLeaving) && m.State != n.meta.State {
		n.mu.Unlock()
		if left {
			return fmt.Errorf("update meta: state %s: %w", m.State, ErrLeft)
		}
		return fmt.Errorf("update meta: state %s is set by Leave only", m.State)
	}
	enc, err := m.Encode()
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("update meta: %w", err)
	}
	n.meta, n.encoded = m, enc
	n.mu.Unlock()
	signal(n.metaDirty)
	signal(n.changed)
	return nil
}

// metaLoop pushes metadata changes into memberlist, one UpdateNode at a
// time, off the caller's path.
func (n *Node) metaLoop() {
	for {
		select {
		case <-n.done:
			return
		case <-n.metaDirty:
		}
		select {
		case <-n.done:
			return
		default:
		}
		if err := n.ml.UpdateNode(metaUpdateTimeout); err != nil {
			n.log.Debug("metadata update not yet gossiped", zap.Error(err))
		}
	}
}

// Events returns the membership events in the order memberlist reported
// them. The first one is this node's own join. Delivery never blocks
// memberlist: the channel holds Config.EventBuffer events, and when the
// consumer falls that far behind new events are dropped (logged, counted by
// Dropped) and the consumer sees a gap in Seq; it should then re-read
// Members(), which is always current. The channel is closed by Shutdown.
func (n *Node) Events() <-chan Event { return n.events }

// Dropped returns how many events were dropped because Events was full.
func (n *Node) Dropped() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dropped
}

// Leave tells the cluster this node is going (a graceful exit, e.g. on
// SIGTERM): peers see it leave within a gossip round instead of after the
// failure-detection timeout. It waits up to timeout for the message to go
// out. Gossip keeps running until Shutdown.
//
// Leaving is a promise that this process will not train in this job again:
// peers that hear of it stop counting this process (this incarnation) in
// the majority of their last world (View.Departed), so that survivors of a
// graceful stop are not left waiting for ever. A later process under the
// same name is a new member, not this one. Call it only once training has
// stopped. From the first moment of Leave, Rendezvous fails with ErrLeft
// (also one already running) and the metadata stays StateLeaving.
func (n *Node) Leave(timeout time.Duration) error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.shutdown {
		return ErrShutdown
	}
	n.left.Store(true)
	_ = n.UpdateMeta(func(m *Meta) { m.State = StateLeaving })
	// Tell every member directly that we leave on purpose: memberlist's
	// leave message replaces the queued metadata update above, so through
	// gossip alone most peers would take the departure for a failure and
	// keep trying to reconnect to us (see reconnectLoop).
	n.tellLeaving(min(timeout/2, 500*time.Millisecond))
	if err := n.ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	n.log.Info("left the cluster")
	return nil
}

// Shutdown stops gossip and closes Events. Without a Leave first, peers
// find out through failure detection. Safe to call more than once.
func (n *Node) Shutdown() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.shutdown {
		return nil
	}
	n.shutdown = true
	close(n.done)
	err := n.ml.Shutdown()
	n.mu.Lock()
	n.closed = true
	close(n.events)
	n.mu.Unlock()
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// lostMember is a member that disappeared without leaving on purpose.
type lostMember struct {
	addr  string
	since time.Time
}

// reconnectFor bounds how long a lost member is retried. A partition can
// outlast a weekend; a member that never comes back costs one refused dial
// per ReconnectInterval until then (memberlist's own DeadNodeReclaimTime
// story aside, serf uses the same 24 h).
const reconnectFor = 24 * time.Hour

// reconnectLoop tries, every ReconnectInterval, to join again the members
// this node lost without their leaving on purpose. memberlist gossips to a
// dead node only for GossipToTheDeadTime and probes only live ones, so two
// sides of a partition that each declared the other dead never talk again
// on their own; one successful push/pull across the healed link merges the
// two views (the members refute their deaths), and rendezvous sees them
// again. A graceful Leave is never retried: it said it was going.
func (n *Node) reconnectLoop() {
	tick := time.NewTicker(n.cfg.ReconnectInterval)
	defer tick.Stop()
	var busyMu sync.Mutex
	busy := map[string]bool{} // addresses being tried
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		}
		if n.left.Load() {
			return
		}
		now := time.Now()
		var addrs, names []string
		n.mu.Lock()
		live := map[string]bool{}
		for _, m := range n.members {
			live[m.Addr] = true
		}
		for id, l := range n.lost {
			// Gone for too long, or its address now belongs to a live
			// member (a restarted process under a new name): stop.
			if now.Sub(l.since) > reconnectFor || live[l.addr] {
				delete(n.lost, id)
				continue
			}
			addrs, names = append(addrs, l.addr), append(names, id)
		}
		n.mu.Unlock()
		if len(addrs) == 0 {
			continue
		}
		// Each address on its own goroutine, one try at a time per address:
		// a dial to a host that is gone takes memberlist's TCPTimeout (10 s)
		// and must not hold up the members that are back.
		for i, addr := range addrs {
			busyMu.Lock()
			if busy[addr] {
				busyMu.Unlock()
				continue
			}
			busy[addr] = true
			busyMu.Unlock()
			go func(id, addr string) {
				defer func() { busyMu.Lock(); delete(busy, addr); busyMu.Unlock() }()
				n.reconnect(id, addr)
			}(names[i], addr)
		}
	}
}

// reconnect tries once to join the lost member id at addr.
func (n *Node) reconnect(id, addr string) {
	if n.left.Load() {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	joined, err := n.ml.Join([]string{addr})
	switch {
	case joined > 0:
		n.log.Info("reached a lost member again (a partition healed?)", zap.String("peer", id), zap.String("addr", addr))
	case err != nil && isKeyError(err):
		// Another job's node holds the address now (ports are reused): it
		// can never be ours again, and every try would make it log a
		// rejected key.
		n.log.Info("a lost member's address now answers with another gossip key; no longer reconnecting", zap.String("peer", id), zap.String("addr", addr))
		n.forgetLost(id, addr)
	default:
		n.log.Debug("lost member still unreachable", zap.String("peer", id), zap.String("addr", addr), zap.Error(err))
	}
}

// tellLeaving sends a Leaving notice, naming this process by ID and
// incarnation, to every member in parallel and waits up to d for the sends.
func (n *Node) tellLeaving(d time.Duration) {
	n.mu.Lock()
	msg := &leavingMsg{ID: n.cfg.Name, Inc: n.meta.Inc}
	var peers []string
	for id := range n.targets {
		if id != n.cfg.Name {
			peers = append(peers, id)
		}
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range peers {
		wg.Go(func() {
			if err := n.send(id, kindLeaving, msg); err != nil {
				n.log.Debug("leaving notice not delivered", zap.Error(err))
			}
		})
	}
	waitTimeout(&wg, d)
}

// departures lists, sorted, the processes that announced a graceful
// departure: those gone after saying so, and those that said so and are
// still going (their leave not yet seen), also when a new process under the
// name has joined since. Entries older than reconnectFor are dropped: the
// rendezvous that needs one follows the departure within seconds, and
// forgetting one only makes the majority rule stricter.
func (n *Node) departures() []Departure {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Departure, 0, len(n.departed))
	for d, at := range n.departed {
		if now.Sub(at) > reconnectFor {
			delete(n.departed, d)
			continue
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Departure) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Inc, b.Inc)) })
	return out
}

// heardDeparture records that process d said it leaves. The caller holds mu.
func (n *Node) heardDeparture(d Departure) {
	if _, ok := n.departed[d]; !ok {
		n.departed[d] = time.Now()
	}
}

// forgetLost drops id from the reconnect list if it still has addr.
func (n *Node) forgetLost(id, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l, ok := n.lost[id]; ok && l.addr == addr {
		delete(n.lost, id)
	}
}

// signal does a non-blocking send on a capacity-1 channel: a pending
// signal already says everything a second one would.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// delegate implements memberlist.Delegate and memberlist.EventDelegate for a
// Node without putting those methods on Node's public API.
type delegate Node

// NodeMeta hands memberlist our encoded metadata. Encode already checked
// the limit; a copy, because memberlist keeps the slice.
func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.encoded) > limit { // cannot happen (Encode checks MetaMaxSize); never panic memberlist
		return nil
	}
	return slices.Clone(d.encoded)
}

// NotifyMsg receives a rendezvous message over memberlist's reliable
// channel. It must not block: decode, queue, drop if full.
func (d *delegate) NotifyMsg(b []byte) {
	n := (*Node)(d)
	msg, err := decodeMessage(b)
	if err != nil {
		n.log.Warn("dropping malformed rendezvous message", zap.Error(err))
		return
	}
	msg.at = time.Now()
	if msg.kind == kindLeaving { // membership, not rendezvous: note it here
		n.mu.Lock()
		if msg.from != n.cfg.Name && n.members[msg.from].ID != "" {
			// The notice names its process: older code sends no
			// incarnation, and then 0 matches its metadata's.
			n.heardDeparture(Departure{ID: msg.from, Inc: msg.leaving.Inc})
		}
		n.mu.Unlock()
		return
	}
	select {
	case n.inbox <- msg:
	default:
		n.log.Warn("rendezvous inbox full, dropping message", zap.String("type", msg.kind.String()), zap.String("from", msg.from))
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(mn *memberlist.Node)   { (*Node)(d).observe(EventJoin, mn) }
func (d *delegate) NotifyUpdate(mn *memberlist.Node) { (*Node)(d).observe(EventUpdate, mn) }
func (d *delegate) NotifyLeave(mn *memberlist.Node)  { (*Node)(d).observe(EventLeave, mn) }

// observe records a membership change and emits its event. It runs under
// memberlist's node lock: decode, update the table, send without blocking.
func (n *Node) observe(kind EventKind, mn *memberlist.Node) {
	m := Member{ID: mn.Name, Addr: mn.Address(), Alive: kind != EventLeave}
	meta, err := DecodeMeta(mn.Meta)
	switch {
	case err != nil:
		n.log.Warn("peer metadata does not decode; treating it as not eligible", zap.String("peer", mn.Name), zap.Error(err))
		meta = Meta{ID: mn.Name}
	case meta.ID != mn.Name:
		n.log.Warn("peer metadata names another node; treating it as not eligible", zap.String("peer", mn.Name), zap.String("meta_id", meta.ID))
		meta = Meta{ID: mn.Name}
	}
	m.Meta = meta
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	if meta.State == StateLeaving && m.ID != n.cfg.Name {
		// Recorded now, not only when it is gone: a new process under the
		// name may replace it in memberlist before any leave event.
		n.heardDeparture(departureOf(m))
	}
	if kind == EventLeave {
		delete(n.members, m.ID)
		delete(n.targets, m.ID)
		// A member that said it was leaving is not coming back, and no
		// longer counts in the majority of the last world (departed); one
		// that only watched is neither; any other went silent: failure or
		// partition.
		_, said := n.departed[departureOf(m)]
		switch {
		case m.ID == n.cfg.Name || meta.State == StateObserver || said:
		default:
			n.lost[m.ID] = lostMember{addr: m.Addr, since: time.Now()}
		}
	} else {
		// A new process under a departed name (another incarnation) is a
		// new member; its predecessor's departure stands (see lastQuorum).
		n.members[m.ID] = m
		n.targets[m.ID] = &memberlist.Node{Name: mn.Name, Addr: slices.Clone(mn.Addr), Port: mn.Port}
		delete(n.lost, m.ID)
	}
	n.seq++
	ev := Event{Seq: n.seq, Kind: kind, Member: m}
	select {
	case n.events <- ev:
	default:
		n.dropped++
		if n.dropped == 1 || n.dropped%100 == 0 {
			n.log.Warn("event consumer is slow; dropping membership events (re-read Members())", zap.Uint64("dropped", n.dropped))
		}
	}
	n.mu.Unlock()
	if kind != EventUpdate || m.ID != n.cfg.Name {
		n.log.Debug("membership", zap.String("event", kind.String()), zap.String("peer", m.ID), zap.String("state", meta.State.String()))
	}
	signal(n.changed)
}
