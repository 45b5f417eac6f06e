package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/node"
)

// TestWatchMembershipAbortsOnPeerLoss: when a member of the current world
// leaves, the watcher calls the world's abort hook (what makes an NCCL
// collective in flight fail with ErrPeerLost at once), naming the node;
// a member outside the world, or no world training, calls nothing.
func TestWatchMembershipAbortsOnPeerLoss(t *testing.T) {
	start := func(name string, seeds []string) *node.Node {
		cfg := node.DefaultConfig()
		cfg.Name = name
		cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
		cfg.Seeds = seeds
		cfg.SecretKey = node.DeriveKey([]byte("membership test"))
		cfg.JobHash = node.HashJobConfig([]byte("membership test job"))
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
	go watchMembership(ctx, a, node.HashJobConfig([]byte("membership test job")), &world, &want, &peerGone, zap.NewNop())

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
