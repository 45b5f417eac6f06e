package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/node"
	"github.com/peertune/peertune/trainer"
)

// TestWatchMembershipAbortsOnPeerLoss: when a member of the current world
// leaves, the watcher calls the world's abort hook (what makes an NCCL
// collective in flight fail with ErrPeerLost at once), naming the node;
// a member outside the world, or no world training, calls nothing.
func TestWatchMembershipAbortsOnPeerLoss(t *testing.T) {
	start := func(name string, seeds []string) *node.Node { return startJobNode(t, name, seeds, "membership test") }
	a := start("node-a", nil)
	b := start("node-b", []string{a.Addr()})
	c := start("node-c", []string{a.Addr()})
	deadline := time.Now().Add(5 * time.Second)
	for len(a.Members()) != 3 {
		if time.Now().After(deadline) {
			t.Fatal("the nodes did not see each other")
		}
		time.Sleep(20 * time.Millisecond)
	}

	var world atomic.Pointer[node.World]
	world.Store(&node.World{Epoch: 1, Size: 2, Peers: []node.Peer{{ID: "node-a"}, {ID: "node-b"}}})
	var want atomic.Bool
	var peerGone atomic.Pointer[func(error)]
	calls := make(chan error, 4)
	f := func(err error) { calls <- err }
	peerGone.Store(&f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var jobDone atomic.Pointer[string]
	go watchMembership(ctx, a, node.HashJobConfig([]byte("membership test")), &world, &want, &peerGone, &jobDone, zap.NewNop())

	// node-c is not in the world: its leaving aborts nothing.
	if err := c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-calls:
		t.Fatalf("a node outside the world left and the world was aborted: %v", err)
	case <-time.After(time.Second):
	}
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-calls:
		if !strings.Contains(err.Error(), "node-b") {
			t.Errorf("abort reason %q does not name node-b", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("node-b of the world left and the world's collective was not aborted")
	}
}

// TestMakeWorldCommAbortsOnPeerLoss: while a world's communicator is being
// made (here: the ranks' agreement over the ring, which rank 1 never
// joins), a member seen failing by the watcher cancels it, and the error
// is a lost peer, so the survivors form a new world instead of exiting.
func TestMakeWorldCommAbortsOnPeerLoss(t *testing.T) {
	rings := loopbackRing(t, 2, 7)
	glue := &commGlue{log: zap.NewNop()}
	w := node.World{Epoch: 7, Rank: 0, Size: 2, Peers: []node.Peer{{ID: "a"}, {ID: "b"}}}
	var peerGone atomic.Pointer[func(error)]
	done := make(chan error, 1)
	go func() {
		_, err := makeWorldComm(context.Background(), glue, rings[0], w, &peerGone)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for peerGone.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("makeWorldComm never armed the membership abort")
		}
		time.Sleep(5 * time.Millisecond)
	}
	(*peerGone.Load())(errors.New("node b failed or left (membership)"))
	select {
	case err := <-done:
		if !errors.Is(err, collective.ErrPeerLost) || !strings.Contains(err.Error(), "node b") {
			t.Errorf("err = %v, want a lost peer naming node b", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the membership abort did not end the communicator's making")
	}
	if peerGone.Load() != nil {
		t.Error("the abort hook is still armed after makeWorldComm returned")
	}
}

// TestJobHashIncludesPrecision: nodes that resolved --precision differently
// (a bf16 GPU and a CPU) have different job hashes, so rendezvous refuses
// to put them in one world; the same precision gives the same hash.
func TestJobHashIncludesPrecision(t *testing.T) {
	cfg := trainer.DefaultConfig()
	src := trainer.ModelSource{Hash: "weights"}
	if jobHash(cfg, src, kernels.BF16) == jobHash(cfg, src, kernels.F32) {
		t.Error("bf16 and f32 nodes share a job hash")
	}
	if jobHash(cfg, src, kernels.F32) != jobHash(cfg, src, kernels.F32) {
		t.Error("the job hash is not a function of its inputs")
	}
}

// TestWaitingNodeStopsWhenJobDone: a node waiting in rendezvous (here for a
// world of 3 that will never form) learns from gossip that another node of
// its job completed it (Meta.Done) and stops waiting, instead of starting
// the job again alone when the rendezvous timeout passes.
func TestWaitingNodeStopsWhenJobDone(t *testing.T) {
	start := func(name string, seeds []string) *node.Node { return startJobNode(t, name, seeds, "done test") }
	a := start("node-a", nil)
	b := start("node-b", []string{a.Addr()})
	var world atomic.Pointer[node.World]
	var want atomic.Bool
	var peerGone atomic.Pointer[func(error)]
	var jobDone atomic.Pointer[string]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchMembership(ctx, a, node.HashJobConfig([]byte("done test")), &world, &want, &peerGone, &jobDone, zap.NewNop())

	opts := node.DefaultRendezvousOptions()
	opts.WorldSize, opts.Timeout = 3, time.Hour
	got := make(chan error, 1)
	go func() {
		_, err := rendezvousUnlessDone(ctx, a, nil, opts, &jobDone)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("rendezvous ended before anyone finished: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := b.UpdateMeta(func(m *node.Meta) { m.State, m.Done = node.StateTraining, true }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("rendezvous committed a world")
		}
		if by := jobDone.Load(); by == nil || *by != "node-b" {
			t.Errorf("jobDone = %v, want node-b", by)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting node did not stop when the job was done")
	}
}

// startJobNode starts a real gossip node on loopback for job (its secret
// and job hash), joining seeds; it is shut down when the test ends.
func startJobNode(t *testing.T, name string, seeds []string, job string) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Name = name
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	cfg.Seeds = seeds
	cfg.SecretKey = node.DeriveKey([]byte(job))
	cfg.JobHash = node.HashJobConfig([]byte(job))
	cfg.Endpoint = "127.0.0.1:1"
	cfg.Device = "cpu"
	cfg.JoinTimeout = 5 * time.Second
	n, err := node.Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Shutdown() })
	return n
}
