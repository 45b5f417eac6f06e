package main

import (
	"os"
	"strings"
	"testing"

	"github.com/peertune/peertune/node"
)

// TestIdentityFile: a node's identity is held exclusively while its process
// lives; a process that died after its last vote was committed is
// succeeded with the same incarnation and starts from that world; one that
// died between a vote and its outcome, or left on purpose, is not.
func TestIdentityFile(t *testing.T) {
	dir := t.TempDir()
	w5 := node.World{Epoch: 5, Size: 2, Peers: []node.Peer{{ID: "n1", Inc: 1}, {ID: "n2", Inc: 2}}}
	w6 := node.World{Epoch: 6, Size: 1, Peers: []node.Peer{{ID: "n1", Inc: 1}}}

	a, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if a.inc == 0 || a.last != nil {
		t.Fatalf("first claim: incarnation %x, last %v", a.inc, a.last)
	}
	if _, err := claimIdentity(dir, "n1"); err == nil || !strings.Contains(err.Error(), "another process is running as node \"n1\"") {
		t.Fatalf("second claim while the first lives: %v", err)
	}
	b, err := claimIdentity(dir, "n1/x") // names that sanitise alike still get their own file
	if err != nil || b.inc == a.inc || b.path == a.path {
		t.Fatalf("n1/x: %+v, %v", b, err)
	}
	b.release(false)
	c2, err := claimIdentity(dir, "n1_x")
	if err != nil || c2.path == b.path {
		t.Fatalf("n1_x shares n1/x's file: %+v, %v", c2, err)
	}
	c2.release(true)

	// Voted for epoch 5, learned it committed, then crashed: taken over,
	// starting from epoch 5.
	if err := a.vote(w5); err != nil {
		t.Fatal(err)
	}
	if err := a.committed(w5); err != nil {
		t.Fatal(err)
	}
	a.release(false) // a crash: the lock goes, the file stays
	c, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if c.inc != a.inc || c.last == nil || c.last.Epoch != 5 || c.last.Rank != 0 {
		t.Fatalf("after a crash: incarnation %x (want %x), last %+v (want epoch 5, rank 0)", c.inc, a.inc, c.last)
	}

	// Voted for epoch 6, crashed before learning the outcome: a new member.
	if err := c.vote(w6); err != nil {
		t.Fatal(err)
	}
	c.release(false)
	d, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if d.inc == a.inc || d.last != nil {
		t.Errorf("a predecessor that died between a vote and its outcome was taken over: %x, last %v", d.inc, d.last)
	}

	// A graceful exit: never taken over.
	inc := d.inc
	d.release(true)
	if _, err := os.Stat(d.path); !os.IsNotExist(err) {
		t.Errorf("identity file after a graceful exit: %v", err)
	}
	e, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if e.inc == inc {
		t.Error("a node that left on purpose was taken over")
	}
	path := e.path
	e.release(false)

	// A torn or corrupt file is not trusted.
	if err := os.WriteFile(path, []byte(`{"incarnation":"00ff`), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := claimIdentity(dir, "n1")
	if err != nil || f.inc == 0 || f.inc == 0xff {
		t.Fatalf("corrupt identity file: %+v, %v", f, err)
	}
	f.release(true)
}
