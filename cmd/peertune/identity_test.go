package main

import (
	"os"
	"strings"
	"testing"
)

// TestIdentityFile: a node's identity is held exclusively while its process
// lives; a process that died (its lock gone with it) is succeeded with the
// same incarnation; one that left on purpose is not.
func TestIdentityFile(t *testing.T) {
	dir := t.TempDir()
	a, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if a.inc == 0 {
		t.Fatal("incarnation 0 (means unknown)")
	}
	if _, err := claimIdentity(dir, "n1"); err == nil || !strings.Contains(err.Error(), "another process is running as node \"n1\"") {
		t.Fatalf("second claim while the first lives: %v", err)
	}
	b, err := claimIdentity(dir, "n2") // another name in the same directory
	if err != nil || b.inc == a.inc {
		t.Fatalf("n2: %+v, %v", b, err)
	}
	b.release(false)

	a.release(false) // what a crash does: the lock goes, the file stays
	c, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if c.inc != a.inc {
		t.Errorf("after a crash: incarnation %x, want the predecessor's %x", c.inc, a.inc)
	}
	c.release(true) // a graceful exit
	if _, err := os.Stat(c.path); !os.IsNotExist(err) {
		t.Errorf("identity file after a graceful exit: %v", err)
	}
	d, err := claimIdentity(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer d.release(true)
	if d.inc == a.inc {
		t.Error("a node that left on purpose was succeeded")
	}

	// A corrupt file is replaced, not trusted.
	e, err := claimIdentity(dir, "n3")
	if err != nil {
		t.Fatal(err)
	}
	path := e.path
	e.release(false)
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := claimIdentity(dir, "n3")
	if err != nil || f.inc == 0 {
		t.Fatalf("corrupt identity file: %+v, %v", f, err)
	}
	f.release(true)
}
