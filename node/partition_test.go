package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// fabric is the network the nodes of a partition test share: each gossip
// address may be put on a side; two addresses on different sides cannot
// reach each other (UDP dropped, TCP dials refused). Addresses on no side
// reach everyone. Changed at run time to partition and heal.
type fabric struct {
	mu   sync.Mutex
	side map[string]int
}

func newFabric() *fabric { return &fabric{side: map[string]int{}} }

func (f *fabric) cut(a, b string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	sa, sb := f.side[a], f.side[b]
	return sa != 0 && sb != 0 && sa != sb
}

// partition puts each group of nodes on a side of its own.
func (f *fabric) partition(groups ...[]*testNode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, g := range groups {
		for _, n := range g {
			f.side[n.Addr()] = i + 1
		}
	}
}

func (f *fabric) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.side)
}

// faultTransport is memberlist's NetTransport with a fabric in front: what
// the fabric cuts is dropped (packets, both ways) or refused (stream dials;
// the peer's own transport refuses the other direction).
type faultTransport struct {
	*memberlist.NetTransport
	f       *fabric
	self    string
	packets chan *memberlist.Packet
	done    chan struct{} // Shutdown began: stop delivering
	stopped chan struct{} // the NetTransport's listeners are gone: stop reading
	once    sync.Once
}

var errPartitioned = errors.New("fault injection: partitioned")

func newFaultTransport(t *testing.T, f *fabric, mc *memberlist.Config) *faultTransport {
	t.Helper()
	var nt *memberlist.NetTransport
	var err error
	for range 10 { // port 0 binds TCP, then UDP on the same port: retry a taken pair
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: 0, Logger: mc.Logger})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("net transport: %v", err)
	}
	ft := &faultTransport{
		NetTransport: nt,
		f:            f,
		self:         net.JoinHostPort(mc.BindAddr, fmt.Sprint(nt.GetAutoBindPort())),
		packets:      make(chan *memberlist.Packet),
		done:         make(chan struct{}),
		stopped:      make(chan struct{}),
	}
	go ft.filter()
	return ft
}

// filter forwards the packets the fabric lets through. It reads the
// NetTransport's channel until its listeners have stopped: a listener
// blocked on that unbuffered channel would hang NetTransport.Shutdown.
func (t *faultTransport) filter() {
	in := t.NetTransport.PacketCh()
	for {
		select {
		case <-t.stopped:
			return
		case p := <-in:
			if t.f.cut(t.self, p.From.String()) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done: // memberlist no longer reads: drop
			}
		}
	}
}

func (t *faultTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.cut(t.self, addr) {
		return time.Now(), nil // sent into the void, as on a real partition
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.cut(t.self, addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, errPartitioned)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *faultTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.done)
		err = t.NetTransport.Shutdown()
		close(t.stopped)
	})
	return err
}

// fastFaultConfig gives a node memberlist timings for a test of a few
// seconds, and the fabric's transport. GossipToTheDeadTime is cut short so
// that memberlist forgets dead nodes at once: a healed partition can then
// only merge through reconnectLoop, which is what the test is about.
func fastFaultConfig(t *testing.T, f *fabric) func(*Config) {
	return func(c *Config) {
		c.ProbeInterval = 200 * time.Millisecond
		c.ProbeTimeout = 100 * time.Millisecond
		c.SuspicionMult = 3
		c.GossipInterval = 50 * time.Millisecond
		c.ReconnectInterval = 300 * time.Millisecond
		c.memberlistHook = func(mc *memberlist.Config) {
			mc.Transport = newFaultTransport(t, f, mc)
			mc.GossipToTheDeadTime = 200 * time.Millisecond
		}
	}
}

// faultCluster starts the named nodes on the fabric, each joining the first.
func faultCluster(t *testing.T, f *fabric, names ...string) []*testNode {
	t.Helper()
	first := mustStart(t, names[0], nil, fastFaultConfig(t, f))
	ns := []*testNode{first}
	for _, name := range names[1:] {
		ns = append(ns, mustStart(t, name, []string{first.Addr()}, fastFaultConfig(t, f)))
	}
	waitFor(t, 10*time.Second, "all members visible", func() bool {
		for _, n := range ns {
			if len(n.Members()) != len(ns) {
				return false
			}
		}
		return true
	})
	return ns
}

// rendezvousFrom runs Rendezvous on every node with the same last world and
// sends each result on the returned channel.
func rendezvousFrom(ctx context.Context, last *World, opts RendezvousOptions, ns ...*testNode) <-chan result {
	out := make(chan result, len(ns))
	for _, n := range ns {
		go func() {
			w, err := Rendezvous(ctx, n.Node, last, opts)
			out <- result{n.ID(), w, err}
		}()
	}
	return out
}

func collect(t *testing.T, ch <-chan result, k int, d time.Duration) map[string]result {
	t.Helper()
	res := map[string]result{}
	timeout := time.After(d)
	for len(res) < k {
		select {
		case r := <-ch:
			res[r.id] = r
		case <-timeout:
			t.Fatalf("only %d of %d rendezvous returned within %s: %v", len(res), k, d, res)
		}
	}
	return res
}

func setTraining(t *testing.T, ns ...*testNode) {
	t.Helper()
	for _, n := range ns {
		if err := n.UpdateMeta(func(m *Meta) { m.State = StateTraining }); err != nil {
			t.Fatal(err)
		}
	}
}

// sees reports whether n sees every id alive in state st.
func sees(n *testNode, st State, ids ...string) bool {
	ms := n.Members()
	for _, id := range ids {
		i := slices.IndexFunc(ms, func(m Member) bool { return m.ID == id })
		if i < 0 || !ms[i].Alive || ms[i].Meta.State != st {
			return false
		}
	}
	return true
}

func loggedReason(n *testNode, reason string) bool {
	for _, e := range n.logs.FilterMessage("rendezvous").All() {
		if e.ContextMap()["reason"] == reason {
			return true
		}
	}
	return false
}

// No split brain under a real partition: 5 nodes commit a world; a
// partition cuts {n1,n2} from {n3,n4,n5}; both sides rendezvous with the
// world of 5 as their last. The 3 form a world (a strict majority of 5); the
// 2 wait and say why, although n1 is the smallest ID and would lead them.
// When the network heals, the two sides find each other again (reconnect:
// memberlist has long forgotten the dead) and all 5 form one world with a
// larger epoch than the majority's.
func TestPartitionMinorityWaitsThenRejoins(t *testing.T) {
	start := time.Now()
	f := newFabric()
	ns := faultCluster(t, f, "n1", "n2", "n3", "n4", "n5")
	minority, majority := ns[:2], ns[2:]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := testOpts()
	opts.AckTimeout = 1500 * time.Millisecond
	opts.MinNodes = 5
	first := collect(t, rendezvousFrom(ctx, nil, opts, ns...), 5, 10*time.Second)
	checkOneWorld(t, first, "n1", "n2", "n3", "n4", "n5")
	w1 := first["n1"].w
	if w1.Epoch != 1 || w1.Size != 5 {
		t.Fatalf("first world %+v, want epoch 1 of 5", w1)
	}
	setTraining(t, ns...)
	t.Logf("world 1 of 5 after %s", time.Since(start))

	// The partition. min-nodes 1: only the majority rule can stop the 2.
	f.partition(minority, majority)
	cut := time.Now()
	opts.MinNodes = 1
	minCh := rendezvousFrom(ctx, &w1, opts, minority...)
	maj := collect(t, rendezvousFrom(ctx, &w1, opts, majority...), 3, 10*time.Second)
	checkOneWorld(t, maj, "n3", "n4", "n5")
	w2 := maj["n3"].w
	if w2.Size != 3 || w2.Epoch <= w1.Epoch || w2.Rank != 0 {
		t.Fatalf("majority world %+v, want 3 nodes led by n3, epoch > %d", w2, w1.Epoch)
	}
	setTraining(t, majority...)
	t.Logf("majority {n3,n4,n5} committed epoch %d %s after the cut", w2.Epoch, time.Since(cut))

	// The minority must wait, and say why, once it has declared the
	// majority dead. Until then it may propose worlds that include a
	// majority node it still believes alive; that node cannot ack, so
	// nothing commits. Its failure detection is slower than the
	// majority's (Lifeguard slows the probes of a node whose probes fail).
	waitFor(t, 10*time.Second, "the minority logs that it has no majority", func() bool {
		for _, n := range minority {
			if !loggedReason(n, "no majority of last world (2 of 5)") {
				return false
			}
		}
		return true
	})
	t.Logf("minority {n1,n2} logged \"no majority of last world (2 of 5)\" %s after the cut", time.Since(cut))
	const hold = 1500 * time.Millisecond
	select {
	case r := <-minCh:
		t.Fatalf("minority node %s returned during the partition: world %+v, err %v", r.id, r.w, r.err)
	case <-time.After(hold):
	}
	for _, n := range minority {
		if sees(n, StateTraining, "n3") || sees(n, StateReady, "n3") {
			t.Errorf("%s still sees n3 across the partition", n.ID())
		}
		n.mu.Lock()
		lost := len(n.lost)
		n.mu.Unlock()
		if lost != 3 {
			t.Errorf("%s remembers %d lost members for reconnecting, want 3", n.ID(), lost)
		}
	}
	t.Logf("minority {n1,n2} still waiting %s after the cut (held %s after saying so)", time.Since(cut), hold)

	// Heal. The majority trains until it sees the minority ready outside its
	// world (the rebuild vote), then rendezvous again with its own last world.
	f.heal()
	healed := time.Now()
	waitFor(t, 10*time.Second, "majority sees the minority ready again", func() bool {
		for _, n := range majority {
			if !sees(n, StateReady, "n1", "n2") {
				return false
			}
		}
		return true
	})
	t.Logf("views merged %s after healing", time.Since(healed))
	again := rendezvousFrom(ctx, &w2, opts, majority...)
	all := collect(t, again, 3, 15*time.Second)
	for id, r := range collect(t, minCh, 2, 15*time.Second) {
		all[id] = r
	}
	checkOneWorld(t, all, "n1", "n2", "n3", "n4", "n5")
	w3 := all["n1"].w
	if w3.Epoch <= w2.Epoch {
		t.Fatalf("healed world epoch %d is not after the majority's %d", w3.Epoch, w2.Epoch)
	}
	// Whichever side's reconnect loop dials first merges the views (the
	// other side then sees a join and stops trying): some node must have.
	reconnected := false
	for _, n := range ns {
		reconnected = reconnected || hasLog(n.logs, zapcore.InfoLevel, "reached a lost member again")
	}
	if !reconnected {
		t.Error("no node logged reaching a lost member again")
	}
	t.Logf("one world of 5, epoch %d, %s after healing; test took %s", w3.Epoch, time.Since(healed), time.Since(start))
}

// --allow-minority is the operator's override: the minority side of a
// partition forms a world of its own (and so does the majority: the operator
// accepted that both sides train).
func TestPartitionAllowMinorityCommits(t *testing.T) {
	f := newFabric()
	ns := faultCluster(t, f, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := testOpts()
	opts.AckTimeout = 1500 * time.Millisecond
	opts.MinNodes = 3
	first := collect(t, rendezvousFrom(ctx, nil, opts, ns...), 3, 10*time.Second)
	checkOneWorld(t, first, "n1", "n2", "n3")
	w1 := first["n1"].w
	setTraining(t, ns...)

	f.partition(ns[:1], ns[1:])
	cut := time.Now()
	opts.MinNodes = 1
	minOpts := opts
	minOpts.AllowMinority = true
	alone := collect(t, rendezvousFrom(ctx, &w1, minOpts, ns[0]), 1, 10*time.Second)
	checkOneWorld(t, alone, "n1")
	if w := alone["n1"].w; w.Size != 1 || w.Epoch <= w1.Epoch {
		t.Fatalf("minority world %+v", w)
	}
	maj := collect(t, rendezvousFrom(ctx, &w1, opts, ns[1:]...), 2, 10*time.Second)
	checkOneWorld(t, maj, "n2", "n3")
	t.Logf("with AllowMinority n1 alone committed epoch %d, the majority epoch %d, %s after the cut", alone["n1"].w.Epoch, maj["n2"].w.Epoch, time.Since(cut))
}

// A member that left on purpose is not retried by reconnectLoop (Leave
// tells every member directly; its Leaving metadata is usually overtaken by
// the leave itself); one that went silent is.
func TestReconnectSkipsGracefulLeave(t *testing.T) {
	f := newFabric()
	ns := faultCluster(t, f, "n1", "n2", "n3")
	if err := ns[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	ns[2].Shutdown()
	ns[1].Shutdown() // no Leave: a crash, as far as n1 can tell
	waitFor(t, 10*time.Second, "n1 alone", func() bool { return len(ns[0].Members()) == 1 })
	ns[0].mu.Lock()
	_, n2 := ns[0].lost["n2"]
	_, n3 := ns[0].lost["n3"]
	ns[0].mu.Unlock()
	if !n2 || n3 {
		t.Fatalf("lost n2=%v n3=%v, want only the crashed n2", n2, n3)
	}
}

// A lost member's address that now answers with another gossip key (the
// port went to another job) is given up at once, not retried for a day.
func TestReconnectForgetsAddressOfAnotherJob(t *testing.T) {
	n1 := mustStart(t, "n1", nil, func(c *Config) { c.ReconnectInterval = 100 * time.Millisecond })
	other := mustStart(t, "x1", nil, func(c *Config) { c.SecretKey = DeriveKey([]byte("another job")) })
	n1.mu.Lock()
	n1.lost["ghost"] = lostMember{addr: other.Addr(), since: time.Now()}
	n1.mu.Unlock()
	waitFor(t, 5*time.Second, "ghost forgotten", func() bool {
		n1.mu.Lock()
		defer n1.mu.Unlock()
		return len(n1.lost) == 0
	})
	if !hasLog(n1.logs, zapcore.InfoLevel, "now answers with another gossip key") {
		t.Error("not logged")
	}
}

func TestStaleInboxMessagesDropped(t *testing.T) {
	r := &rendezvous{log: zap.NewNop(), opts: testOpts()}
	now := time.Now()
	old := now.Add(-2 * r.opts.AckTimeout)
	for _, k := range []msgKind{kindPropose, kindAck, kindNack} {
		if !r.stale(inbound{kind: k, at: old}, now) {
			t.Errorf("old %s not stale", k)
		}
		if r.stale(inbound{kind: k, at: now.Add(-r.opts.AckTimeout / 2)}, now) {
			t.Errorf("fresh %s stale", k)
		}
	}
	for _, k := range []msgKind{kindCommit, kindRefuse} {
		if r.stale(inbound{kind: k, at: old}, now) {
			t.Errorf("%s treated as stale", k)
		}
	}
}

// Only Ready and Training nodes are ever in a world: Joining (loading),
// Leaving, Observer (`peertune status`) and Unknown never are, whatever else
// the view holds.
func TestProposeNeverTakesNonParticipants(t *testing.T) {
	for _, st := range []State{StateUnknown, StateJoining, StateLeaving, StateObserver, State(200)} {
		for _, others := range [][]Member{nil, {mem("n2", StateReady, hashA)}, {mem("n2", StateTraining, hashA), mem("n3", StateReady, hashA)}} {
			ms := append([]Member{mem("n1", st, hashA), mem("n0", st, "")}, others...)
			w, d := Propose(View{Self: "n2", Members: ms}, nil, RendezvousOptions{MinNodes: 1})
			for _, p := range w.Peers {
				if p.ID == "n1" || p.ID == "n0" {
					t.Fatalf("state %s taken into world %+v (%+v)", st, w, d)
				}
			}
			if d.Leader == "n1" || d.Leader == "n0" {
				t.Fatalf("state %s leads: %+v", st, d)
			}
			if len(others) == 0 && d.Action != Wait {
				t.Fatalf("state %s alone: %+v", st, d)
			}
		}
	}
	if StateObserver.String() != "observer" {
		t.Fatal(StateObserver.String())
	}
}

// An observer (`peertune status`) advertises StateObserver from its first
// gossip and cannot rendezvous.
func TestObserverNode(t *testing.T) {
	ns := cluster(t, "n1")
	obs := mustStart(t, "status-x", []string{ns[0].Addr()}, func(c *Config) { c.Observer = true })
	waitFor(t, 5*time.Second, "observer seen", func() bool { return sees(ns[0], StateObserver, "status-x") })
	if _, err := Rendezvous(context.Background(), obs.Node, nil, testOpts()); err == nil || !strings.Contains(err.Error(), "observer") {
		t.Fatalf("observer rendezvous: %v", err)
	}
}
