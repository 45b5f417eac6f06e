package node

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// These tests run real memberlist instances on 127.0.0.1 with kernel-chosen
// ports (BindPort 0: memberlist binds TCP and UDP on one free port, retrying
// if the pair is taken, and advertises it).

var testKey = DeriveKey([]byte("test secret shared by the job"))

type testNode struct {
	*Node
	logs *observer.ObservedLogs
}

func startNode(t *testing.T, name string, seeds []string, mut func(*Config)) (*testNode, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Seeds = seeds
	cfg.SecretKey = testKey
	cfg.JobHash = hashA
	cfg.Endpoint = "127.0.0.1:1" + name[len(name)-1:] // distinct, unused
	cfg.JoinTimeout = 5 * time.Second
	if mut != nil {
		mut(&cfg)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	n, err := Start(context.Background(), cfg, zap.New(core))
	if err != nil {
		return &testNode{logs: logs}, err
	}
	t.Cleanup(func() { n.Shutdown() })
	return &testNode{Node: n, logs: logs}, nil
}

func mustStart(t *testing.T, name string, seeds []string, mut func(*Config)) *testNode {
	t.Helper()
	n, err := startNode(t, name, seeds, mut)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return n
}

// cluster starts the named nodes, each joining the first.
func cluster(t *testing.T, names ...string) []*testNode {
	t.Helper()
	first := mustStart(t, names[0], nil, nil)
	ns := []*testNode{first}
	for _, name := range names[1:] {
		ns = append(ns, mustStart(t, name, []string{first.Addr()}, nil))
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

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testOpts() RendezvousOptions {
	o := DefaultRendezvousOptions()
	o.Settle = 200 * time.Millisecond
	o.AckTimeout = 3 * time.Second
	o.Poll = 50 * time.Millisecond
	o.RefuseGrace = 3 * time.Second
	return o
}

func hasLog(logs *observer.ObservedLogs, lvl zapcore.Level, substr string) bool {
	for _, e := range logs.All() {
		if e.Level == lvl && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

type result struct {
	id  string
	w   World
	err error
}

func rendezvousAll(ctx context.Context, opts RendezvousOptions, ns ...*testNode) map[string]result {
	var mu sync.Mutex
	out := map[string]result{}
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Go(func() {
			w, err := Rendezvous(ctx, n.Node, nil, opts)
			mu.Lock()
			out[n.ID()] = result{n.ID(), w, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func checkOneWorld(t *testing.T, res map[string]result, members ...string) {
	t.Helper()
	var epoch uint64
	seen := map[int]bool{}
	var peers []string
	for i, id := range members {
		r := res[id]
		if r.err != nil {
			t.Fatalf("%s: %v", id, r.err)
		}
		if i == 0 {
			epoch, peers = r.w.Epoch, ids(r.w)
		}
		if r.w.Epoch != epoch || strings.Join(ids(r.w), ",") != strings.Join(peers, ",") {
			t.Fatalf("%s has world %d %v, %s has %d %v", members[0], epoch, peers, id, r.w.Epoch, ids(r.w))
		}
		if r.w.Size != len(members) || r.w.Rank < 0 || seen[r.w.Rank] || r.w.Peers[r.w.Rank].ID != id {
			t.Fatalf("%s: bad rank/size %+v", id, r.w)
		}
		seen[r.w.Rank] = true
	}
	if epoch == 0 {
		t.Fatal("epoch 0 committed")
	}
}

func TestThreeNodesRendezvous(t *testing.T) {
	ns := cluster(t, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 3
	start := time.Now()
	res := rendezvousAll(ctx, opts, ns...)
	checkOneWorld(t, res, "n1", "n2", "n3")
	t.Logf("rendezvous of 3 took %s", time.Since(start))
	if res["n1"].w.Rank != 0 {
		t.Errorf("leader n1 has rank %d", res["n1"].w.Rank)
	}
	for _, n := range ns {
		if p := res[n.ID()].w.Peers[res[n.ID()].w.Rank]; p.Endpoint != n.Config().Endpoint {
			t.Errorf("%s: endpoint %q, want %q", n.ID(), p.Endpoint, n.Config().Endpoint)
		}
	}
	// The committed epoch is gossiped: everyone's metadata shows it.
	waitFor(t, 5*time.Second, "epoch gossiped", func() bool {
		for _, m := range ns[2].Members() {
			if m.Meta.Epoch != res["n1"].w.Epoch {
				return false
			}
		}
		return true
	})
}

func TestJoinWithoutKeyFails(t *testing.T) {
	seed := mustStart(t, "seed", nil, nil)
	_, err := startNode(t, "nokey", []string{seed.Addr()}, func(c *Config) {
		c.SecretKey, c.Insecure = nil, true
		c.JoinTimeout = time.Second
	})
	if err == nil {
		t.Fatal("a node without the key joined")
	}
	if !errors.Is(err, ErrGossipKey) || !strings.Contains(err.Error(), "no seed accepted our gossip key (wrong or missing --secret-file / PEERTUNE_SECRET?)") {
		t.Fatalf("error does not say why: %v", err)
	}
	waitFor(t, 2*time.Second, "seed logs the rejection", func() bool {
		return hasLog(seed.logs, zapcore.WarnLevel, "rejected unencrypted gossip: the remote node has no --secret-file")
	})
	if len(seed.Members()) != 1 {
		t.Fatalf("seed sees %d members", len(seed.Members()))
	}
}

func TestJoinWithWrongKeyFails(t *testing.T) {
	seed := mustStart(t, "seed", nil, nil)
	_, err := startNode(t, "wrongkey", []string{seed.Addr()}, func(c *Config) {
		c.SecretKey = DeriveKey([]byte("another secret"))
		c.JoinTimeout = time.Second
	})
	if !errors.Is(err, ErrGossipKey) || !strings.Contains(err.Error(), "no seed accepted our gossip key") {
		t.Fatalf("error does not say why: %v", err)
	}
	var remote string
	waitFor(t, 2*time.Second, "seed logs the rejection with the remote address", func() bool {
		for _, e := range seed.logs.All() {
			if e.Level == zapcore.WarnLevel && strings.Contains(e.Message, "different key") {
				remote, _ = e.ContextMap()["remote"].(string)
				return strings.HasPrefix(remote, "127.0.0.1:")
			}
		}
		return false
	})
	if len(seed.Members()) != 1 {
		t.Fatalf("seed sees %d members", len(seed.Members()))
	}
}

func TestJoinUnreachableSeed(t *testing.T) {
	_, err := startNode(t, "lonely", []string{"127.0.0.1:1"}, func(c *Config) { c.JoinTimeout = 500 * time.Millisecond })
	if err == nil || errors.Is(err, ErrGossipKey) || !strings.Contains(err.Error(), "no seed accepted us") {
		t.Fatalf("got %v", err)
	}
}

// The node of the other job has the smallest id, so a rule like "smallest id
// leads" alone would let it refuse everyone else.
func TestJobHashMismatchRefused(t *testing.T) {
	ns := cluster(t, "b1", "b2", "b3")
	odd := mustStart(t, "a0", []string{ns[0].Addr()}, func(c *Config) { c.JobHash = hashB })
	waitFor(t, 5*time.Second, "odd node visible", func() bool { return len(ns[0].Members()) == 4 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 3
	oddErr := make(chan error, 1)
	go func() {
		_, err := Rendezvous(ctx, odd.Node, nil, opts)
		oddErr <- err
	}()
	// Let the odd node be ready first, so the leader sees and refuses it.
	waitFor(t, 5*time.Second, "odd node ready", func() bool {
		for _, m := range ns[0].Members() {
			if m.ID == "a0" {
				return m.Meta.State == StateReady
			}
		}
		return false
	})
	res := rendezvousAll(ctx, opts, ns...)
	checkOneWorld(t, res, "b1", "b2", "b3")

	select {
	case err := <-oddErr:
		// The leader is b1 once every b node is ready; a b node that led
		// in its own view a moment earlier may have refused first.
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "refused by leader b") {
			t.Fatalf("odd node: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("refused node hangs")
	}
	logged := false
	for _, n := range ns {
		logged = logged || hasLog(n.logs, zapcore.WarnLevel, "refusing node a0: job config hash bbbbbbbb… differs from ours (aaaaaaaa…)")
	}
	if !logged {
		t.Error("no leader logged the refusal")
	}
	if !hasLog(odd.logs, zapcore.ErrorLevel, "refused by leader b") || !hasLog(odd.logs, zapcore.ErrorLevel, ": job config differs") {
		t.Error("refused node did not log why")
	}
}

func TestGracefulLeaveSeenQuickly(t *testing.T) {
	ns := cluster(t, "n1", "n2", "n3")
	// Drain the join events first.
	drain := func() {
		for {
			select {
			case <-ns[0].Events():
			default:
				return
			}
		}
	}
	drain()
	start := time.Now()
	if err := ns[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Failure detection alone would take ProbeInterval + SuspicionMult ×
	// ProbeInterval ≈ 6 s with the defaults; a graceful leave is gossiped.
	detect := ns[0].Config().ProbeInterval * time.Duration(1+ns[0].Config().SuspicionMult)
	timeout := time.After(detect / 3)
	for {
		select {
		case ev := <-ns[0].Events():
			if ev.Kind != EventLeave || ev.Member.ID != "n3" {
				continue
			}
			if ev.Member.Alive {
				t.Fatalf("leave event %+v: member still alive", ev)
			}
			t.Logf("leave seen after %s (failure detection: ~%s)", time.Since(start), detect)
			for _, m := range ns[0].Members() {
				if m.ID == "n3" {
					t.Fatal("n3 still listed")
				}
			}
			return
		case <-timeout:
			t.Fatalf("no leave event within %s", detect/3)
		}
	}
}

func TestWorldSizeWaitsThenStartsSmaller(t *testing.T) {
	ns := cluster(t, "n1", "n2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := testOpts()
	opts.WorldSize, opts.MinNodes, opts.Timeout = 3, 2, 1500*time.Millisecond
	start := time.Now()
	res := rendezvousAll(ctx, opts, ns...)
	took := time.Since(start)
	checkOneWorld(t, res, "n1", "n2")
	if took < opts.Timeout {
		t.Fatalf("started after %s, before the %s timeout", took, opts.Timeout)
	}
	if !hasLog(ns[0].logs, zapcore.InfoLevel, "") {
		t.Fatal("no logs")
	}
	waited := false
	for _, e := range ns[0].logs.FilterMessage("rendezvous").All() {
		if e.ContextMap()["reason"] == "2 of 3 nodes (world-size)" {
			waited = true
		}
	}
	if !waited {
		t.Error("the wait was not logged with its reason")
	}
	t.Logf("world of 2 after %s (timeout %s)", took, opts.Timeout)
}

func TestMetaUpdatesReachPeers(t *testing.T) {
	ns := cluster(t, "n1", "n2")
	if err := ns[1].UpdateMeta(func(m *Meta) { m.Step, m.StepMillis, m.State = 17, 250, StateTraining }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "step gossiped", func() bool {
		for _, m := range ns[0].Members() {
			if m.ID == "n2" {
				return m.Meta.Step == 17 && m.Meta.StepMillis == 250 && m.Meta.State == StateTraining
			}
		}
		return false
	})
	if err := ns[1].UpdateMeta(func(m *Meta) { m.Device = strings.Repeat("x", MaxDeviceLen+1) }); err == nil {
		t.Fatal("oversized meta accepted")
	}
	if ns[1].Meta().Step != 17 {
		t.Fatal("failed update changed the meta")
	}
}

// A consumer that never reads loses events, never blocks memberlist, and can
// see the loss in Seq and Dropped.
func TestSlowEventConsumer(t *testing.T) {
	first := mustStart(t, "n1", nil, func(c *Config) { c.EventBuffer = 1 })
	mustStart(t, "n2", []string{first.Addr()}, nil)
	mustStart(t, "n3", []string{first.Addr()}, nil)
	waitFor(t, 5*time.Second, "members", func() bool { return len(first.Members()) == 3 })
	waitFor(t, 5*time.Second, "drops", func() bool { return first.Dropped() > 0 })
	ev := <-first.Events()
	if ev.Seq != 1 || ev.Kind != EventJoin || ev.Member.ID != "n1" {
		t.Fatalf("first event %+v, want our own join", ev)
	}
	_ = first.UpdateMeta(func(m *Meta) { m.Step = 1 })
	var next Event
	waitFor(t, 5*time.Second, "an event after the gap", func() bool {
		select {
		case next = <-first.Events():
			return true
		default:
			return false
		}
	})
	if next.Seq <= 2 {
		t.Fatalf("no gap in Seq after drops: %d", next.Seq)
	}
}

func TestShutdownClosesEvents(t *testing.T) {
	n := mustStart(t, "n1", nil, nil)
	n.Shutdown()
	for range n.Events() {
	}
	if err := n.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("leave after shutdown: %v", err)
	}
	if err := n.UpdateMeta(func(*Meta) {}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("update after shutdown: %v", err)
	}
}

// After a world of 3 loses a node, the two survivors (a majority) form a
// world with a larger epoch; one node alone whose peer crashed (a minority:
// a crash, unlike a Leave, still counts) waits and says why.
func TestReRendezvousKeepsMajority(t *testing.T) {
	ns := cluster(t, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 3
	first := rendezvousAll(ctx, opts, ns...)
	checkOneWorld(t, first, "n1", "n2", "n3")
	last := first["n1"].w

	if err := ns[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n3 gone", func() bool { return len(ns[0].Members()) == 2 && len(ns[1].Members()) == 2 })

	opts.MinNodes = 1
	var mu sync.Mutex
	res := map[string]result{}
	var wg sync.WaitGroup
	for _, n := range ns[:2] {
		wg.Go(func() {
			w, err := Rendezvous(ctx, n.Node, &last, opts)
			mu.Lock()
			res[n.ID()] = result{n.ID(), w, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	checkOneWorld(t, res, "n1", "n2")
	if res["n1"].w.Epoch <= last.Epoch {
		t.Fatalf("epoch %d not after %d", res["n1"].w.Epoch, last.Epoch)
	}
	second := res["n1"].w

	ns[1].Shutdown() // no Leave: for n1 it failed, or is cut off
	waitFor(t, 15*time.Second, "n2 declared dead", func() bool { return len(ns[0].Members()) == 1 })
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	_, err := Rendezvous(short, ns[0].Node, &second, opts)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no majority of last world (1 of 2)") {
		t.Fatalf("a minority formed a world or did not say why: %v", err)
	}
}

// A world of 2 where one node stops gracefully (SIGTERM: Leave): the other
// is not left waiting for a majority it can never get; it forms a world of
// its own at once. The leaver keeps its promise: it cannot rendezvous or
// become ready again. A new process under the leaver's name is a new
// member: it joins the survivor's next world, and the departure of its
// predecessor (another incarnation) stands.
func TestGracefulLeaveSurvivorGoesOn(t *testing.T) {
	ns := cluster(t, "n1", "n2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 2
	first := rendezvousAll(ctx, opts, ns...)
	checkOneWorld(t, first, "n1", "n2")
	last := first["n1"].w
	setTraining(t, ns...)

	start := time.Now()
	if err := ns[1].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := Rendezvous(ctx, ns[1].Node, &last, opts); !errors.Is(err, ErrLeft) {
		t.Errorf("rendezvous after Leave: %v, want ErrLeft", err)
	}
	if err := ns[1].UpdateMeta(func(m *Meta) { m.State = StateReady }); !errors.Is(err, ErrLeft) {
		t.Errorf("ready after Leave: %v, want ErrLeft", err)
	}
	if err := ns[0].UpdateMeta(func(m *Meta) { m.State = StateLeaving }); err == nil {
		t.Error("StateLeaving set without Leave")
	}

	// The survivor's next rendezvous, at once (no waiting for the leave
	// to be seen): a world of 1, although 1 of 2 is no majority.
	opts.MinNodes = 1
	short, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	w, err := Rendezvous(short, ns[0].Node, &last, opts)
	if err != nil {
		t.Fatalf("the survivor of a graceful stop did not go on: %v", err)
	}
	if w.Size != 1 || w.Rank != 0 || w.Peers[0].ID != "n1" || w.Epoch <= last.Epoch {
		t.Fatalf("world %+v after %+v", w, last)
	}
	t.Logf("n1 alone committed epoch %d %s after n2's Leave", w.Epoch, time.Since(start))
	waitFor(t, 5*time.Second, "n2's leave seen", func() bool { return len(ns[0].Members()) == 1 })
	ns[0].mu.Lock()
	_, lost := ns[0].lost["n2"]
	ns[0].mu.Unlock()
	gone := Departure{ID: "n2", Inc: ns[1].Meta().Inc}
	if got := ns[0].departures(); !slices.Equal(got, []Departure{gone}) || lost {
		t.Fatalf("departed %v, lost n2 %v: want n2 departed, not lost", got, lost)
	}

	// A new process named n2 (a restart with --node-name): another
	// incarnation, so a candidate although its predecessor departed; the
	// departure stands (it was true, and a later world may still need it).
	ns[1].Shutdown()
	n2 := mustStart(t, "n2", []string{ns[0].Addr()}, nil)
	waitFor(t, 10*time.Second, "the new n2 seen", func() bool { return len(ns[0].Members()) == 2 })
	if n2.Meta().Inc == gone.Inc || n2.Meta().Inc == 0 {
		t.Fatalf("the new n2 has incarnation %x, its predecessor %x", n2.Meta().Inc, gone.Inc)
	}
	if got := ns[0].departures(); !slices.Equal(got, []Departure{gone}) {
		t.Fatalf("departed %v after a new n2 joined, want %v", got, gone)
	}
	opts.MinNodes = 2
	res := rendezvousEach(ctx, opts, nodeLast{ns[0], &w}, nodeLast{n2, nil})
	checkOneWorld(t, res, "n1", "n2")
	if res["n1"].w.Epoch <= w.Epoch {
		t.Fatalf("epoch %d not after %d", res["n1"].w.Epoch, w.Epoch)
	}
}

// A world of 4 where 2 nodes stop gracefully: the other 2 (half of 4, all of
// the 2 that did not leave) form a world. The member (n2) checks the
// leader's proposal against its own view's departures.
func TestTwoGracefulLeaversOfFour(t *testing.T) {
	ns := cluster(t, "n1", "n2", "n3", "n4")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 4
	first := rendezvousAll(ctx, opts, ns...)
	checkOneWorld(t, first, "n1", "n2", "n3", "n4")
	last := first["n1"].w
	setTraining(t, ns...)
	for _, n := range ns[2:] {
		if err := n.Leave(2 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	opts.MinNodes = 1
	res := collect(t, rendezvousFrom(ctx, &last, opts, ns[:2]...), 2, 10*time.Second)
	checkOneWorld(t, res, "n1", "n2")
	if w := res["n1"].w; w.Size != 2 || w.Epoch <= last.Epoch {
		t.Fatalf("world %+v after %+v", w, last)
	}
}

// A world of 2 where one node crashes (no Leave) and a new process under its
// name starts at its address (a restart, a requeue): the new process is a
// joiner, not the member of the last world, so the survivor has 1 of 2 and
// waits, also once the new process is there, and says why. The rule by
// name went on here; see lastQuorum ("What it costs") for why this is the
// conservative choice. The operator's override (AllowMinority) recovers.
func TestCrashRestartUnderSameNameWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n1, n2, last, old := twoNodeWorldThenCrash(t, ctx, nil)
	ns := []*testNode{n1}
	opts := testOpts()
	if n2.Meta().Inc == old {
		t.Fatalf("the new n2 has its predecessor's incarnation %x", old)
	}
	waitFor(t, 15*time.Second, "n1 sees the new n2", func() bool {
		ms := ns[0].Members()
		i := slices.IndexFunc(ms, func(m Member) bool { return m.ID == "n2" })
		return i >= 0 && ms[i].Alive && ms[i].Meta.Inc == n2.Meta().Inc
	})

	opts.MinNodes = 1
	short, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	res := rendezvousEach(short, opts, nodeLast{ns[0], &last}, nodeLast{n2, nil})
	if r := res["n1"]; !errors.Is(r.err, context.DeadlineExceeded) || !strings.Contains(r.err.Error(), "no majority of last world (1 of 2; 1 restarted as a new process)") {
		t.Fatalf("n1 with a restarted n2: world %+v, err %v; want to wait and say why", r.w, r.err)
	}
	if r := res["n2"]; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("the new n2: world %+v, err %v; want no world", r.w, r.err)
	}

	// The operator's override: both go on, with the new process in the
	// world. (The new n2 gets n1's last world too; the override lifts the
	// rule for it as well.)
	opts.AllowMinority = true
	again := collect(t, rendezvousFrom(ctx, &last, opts, ns[0], n2), 2, 20*time.Second)
	checkOneWorld(t, again, "n1", "n2")
	if w := again["n1"].w; w.Peers[1].Inc != n2.Meta().Inc || w.Epoch <= last.Epoch {
		t.Fatalf("world %+v: want the new n2 (incarnation %x), an epoch after %d", w, n2.Meta().Inc, last.Epoch)
	}
}

// TestCrashRestartSucceedingIncarnation: a process restarted under the
// same name that proves it succeeds its crashed predecessor passes the
// predecessor's incarnation (Config.Incarnation; cmd/peertune does it with
// a locked identity file) and counts as that member: a 2-node world goes
// on, without the operator's override.
func TestCrashRestartSucceedingIncarnation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n1, n2, last, old := twoNodeWorldThenCrash(t, ctx, func(c *Config, oldInc uint64) { c.Incarnation = oldInc })
	ns := []*testNode{n1}
	opts := testOpts()
	if n2.Meta().Inc != old {
		t.Fatalf("Config.Incarnation %x not used: the new n2 has %x", old, n2.Meta().Inc)
	}
	opts.MinNodes = 1
	again := collect(t, rendezvousFrom(ctx, &last, opts, ns[0], n2), 2, 20*time.Second)
	checkOneWorld(t, again, "n1", "n2")
	if w := again["n1"].w; w.Peers[1].Inc != old || w.Epoch <= last.Epoch {
		t.Fatalf("world %+v: want n2 with its predecessor's incarnation %x, an epoch after %d", w, old, last.Epoch)
	}
}

// TestLateSeedIsDialledAgain: a job's first node (the seed, no seeds of its
// own) starts after the others tried to join it. They found each other
// through another seed; the seed that was not listening yet is dialled
// again until it answers, so the two groups become one cluster instead of
// two that would each form a world and train the same job.
func TestLateSeedIsDialledAgain(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	late := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b := mustStart(t, "b1", nil, nil)
	c := mustStart(t, "c1", []string{late, b.Addr()}, nil) // the late seed is not up: joins b only
	if len(c.Members()) != 2 {
		t.Fatalf("c sees %d members, want b and itself", len(c.Members()))
	}
	a := mustStart(t, "a1", nil, func(cfg *Config) { cfg.BindPort = port })
	waitFor(t, 15*time.Second, "the late seed and the others in one cluster", func() bool {
		return len(a.Members()) == 3 && len(b.Members()) == 3 && len(c.Members()) == 3
	})
}

// TestBeforeVote: every member records the world it votes for (the leader
// its proposal, the others their ack) before the vote goes out, and a
// member that cannot record it withholds its vote: no world commits.
func TestBeforeVote(t *testing.T) {
	ns := cluster(t, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	votes := map[string][]uint64{}
	run := func(ctx context.Context, fail string) map[string]result {
		out := map[string]result{}
		var wg sync.WaitGroup
		for _, n := range ns {
			o := testOpts()
			o.MinNodes = 3
			id := n.ID()
			o.BeforeVote = func(w World) error {
				if id == fail {
					return errors.New("disk full")
				}
				mu.Lock()
				votes[id] = append(votes[id], w.Epoch)
				mu.Unlock()
				return nil
			}
			wg.Go(func() {
				w, err := Rendezvous(ctx, n.Node, nil, o)
				mu.Lock()
				out[id] = result{id, w, err}
				mu.Unlock()
			})
		}
		wg.Wait()
		return out
	}
	short, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	if res := run(short, "n2"); res["n1"].err == nil {
		t.Fatalf("a world committed although n2 could not record its vote: %+v", res["n1"].w)
	}
	votes = map[string][]uint64{}
	res := run(ctx, "")
	checkOneWorld(t, res, "n1", "n2", "n3")
	epoch := res["n1"].w.Epoch
	for _, n := range ns {
		if v := votes[n.ID()]; len(v) == 0 || v[len(v)-1] != epoch {
			t.Errorf("%s recorded votes %v, want the committed epoch %d last", n.ID(), v, epoch)
		}
	}
}

// twoNodeWorldThenCrash commits a world of n1 and n2, marks them training,
// then shuts n2 down without Leave (a crash) and starts a new n2 on the
// same port, with mut applied to its config. It returns n1, the new n2,
// the committed world and the crashed n2's incarnation.
func twoNodeWorldThenCrash(t *testing.T, ctx context.Context, mut func(c *Config, oldInc uint64)) (n1, n2 *testNode, last World, oldInc uint64) {
	t.Helper()
	ns := cluster(t, "n1", "n2")
	opts := testOpts()
	opts.MinNodes = 2
	first := rendezvousAll(ctx, opts, ns...)
	checkOneWorld(t, first, "n1", "n2")
	last = first["n1"].w
	oldInc = ns[1].Meta().Inc
	for i, n := range ns {
		if last.Peers[i].Inc != n.Meta().Inc || n.Meta().Inc == 0 {
			t.Fatalf("world peer %+v, process %s has incarnation %x", last.Peers[i], n.ID(), n.Meta().Inc)
		}
	}
	setTraining(t, ns...)
	_, port, err := net.SplitHostPort(ns[1].Addr())
	if err != nil {
		t.Fatal(err)
	}
	ns[1].Shutdown() // a crash: no Leave
	n2 = mustStart(t, "n2", []string{ns[0].Addr()}, func(c *Config) {
		c.BindPort, _ = strconv.Atoi(port)
		if mut != nil {
			mut(c, oldInc)
		}
	})
	return ns[0], n2, last, oldInc
}

// nodeLast is a node and the last world it rendezvouses from.
type nodeLast struct {
	n    *testNode
	last *World
}

// rendezvousEach runs Rendezvous on every node at once, each from its own
// last world, and returns each node's result.
func rendezvousEach(ctx context.Context, opts RendezvousOptions, nodes ...nodeLast) map[string]result {
	res := map[string]result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range nodes {
		wg.Go(func() {
			got, err := Rendezvous(ctx, c.n.Node, c.last, opts)
			mu.Lock()
			res[c.n.ID()] = result{c.n.ID(), got, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return res
}
