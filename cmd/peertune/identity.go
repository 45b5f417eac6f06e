package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A node's identity file lets a process restarted under the same
// --node-name after a crash count as the member it replaces (node.Config
// Incarnation): without it, a 2-node job whose other node crashed and came
// back could not regain its majority. The file lives in the node's --out
// and is held under an exclusive flock for the life of the process, so the
// incarnation is taken over only from a process that is gone: a live
// predecessor (cut off by a partition, not dead) still holds the lock and
// the newcomer refuses to start. A graceful exit deletes the file before it
// announces its departure, so a node that left on purpose is never
// succeeded (the majority rule no longer counts it).
//
// The lock is only as good as flock on that filesystem: local disks and
// Kubernetes persistent volumes are fine; on a network filesystem shared
// by hosts, use distinct --out directories or leave --node-name unset (the
// default name is new for every process, so nothing is ever taken over).

// identity is a claimed identity file.
type identity struct {
	inc  uint64
	path string
	f    *os.File
}

// claimIdentity takes the identity of node name in dir: the incarnation a
// crashed predecessor left there, or a new one.
func claimIdentity(dir, name string) (*identity, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	path := filepath.Join(dir, ".peertune-node-"+sanitize(name)+".id")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another process is running as node %q with this output directory (it holds %s): give each process its own --node-name or --out", name, path)
		}
		return nil, fmt.Errorf("node identity: lock %s: %w", path, err)
	}
	id := &identity{path: path, f: f}
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	if v, err := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 16, 64); err == nil && v != 0 {
		id.inc = v // a predecessor died holding this identity: succeed it
		return id, nil
	}
	for id.inc == 0 {
		id.inc = rand.Uint64()
	}
	if err := f.Truncate(0); err != nil {
		id.release(false)
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if _, err := f.WriteAt([]byte(fmt.Sprintf("%016x\n", id.inc)), 0); err != nil {
		id.release(false)
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if err := f.Sync(); err != nil {
		id.release(false)
		return nil, fmt.Errorf("node identity: %w", err)
	}
	return id, nil
}

// release gives the identity up. leaving (a graceful exit, before Leave)
// deletes it first, so that no later process takes it over.
func (id *identity) release(leaving bool) {
	if id == nil || id.f == nil {
		return
	}
	if leaving {
		_ = os.Remove(id.path)
	}
	id.f.Close() // drops the lock
	id.f = nil
}

// sanitize keeps a node name usable as a file name.
func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == '\\' {
			return '_'
		}
		return r
	}, name)
}
