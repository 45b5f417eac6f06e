package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/peertune/peertune/node"
)

// A node's identity file lets a process restarted under the same
// --node-name after a crash count as the member it replaces (node.Config
// Incarnation): without it, a 2-node job whose other node crashed and came
// back could not regain its majority.
//
// Counting as the same member, the successor must also remember what its
// predecessor voted for, or it could vote for a conflicting world on the
// other side of a partition (Raft's persisted vote). So the file records,
// fsynced before each vote (node.RendezvousOptions.BeforeVote), the world
// the process is about to ack or propose, and after each commit the world
// it committed to. A successor takes the identity over only when the last
// vote is the last committed world (it then starts from that world, as its
// predecessor would have); a predecessor that died between a vote and
// learning its outcome is not taken over (the successor is a new member).
//
// The file lives in the node's --out and is held under an exclusive flock
// for the life of the process, so an identity is taken over only from a
// process that is gone: a live predecessor (cut off, not dead) still holds
// the lock and the newcomer refuses to start. A graceful exit deletes the
// file before it announces its departure, so a node that left on purpose is
// never taken over. The lock is only as good as flock on that filesystem:
// a local disk is fine; a network filesystem, or a volume that can be
// reattached to another host while the old one still runs, may let a
// cut-off predecessor lose its lock. There, leave --node-name unset (the
// default name is new for every process, so nothing is ever taken over).

// identity is a claimed identity file.
type identity struct {
	inc  uint64
	last *node.World // the predecessor's last committed world, if taken over
	path string
	f    *os.File
	rec  identityRecord
}

// identityRecord is the file's content.
type identityRecord struct {
	Inc  string      `json:"incarnation"`
	Last *node.World `json:"last_committed,omitempty"`
	Vote *node.World `json:"last_vote,omitempty"`
}

// identityPath is the file of node name in dir: a readable prefix of the
// name and a hash of all of it (two names never share a file).
func identityPath(dir, name string) string {
	sum := sha256.Sum256([]byte(name))
	short := strings.Map(func(r rune) rune {
		if r < 0x20 || r == '/' || r == '\\' || r == 0x7f {
			return '_'
		}
		return r
	}, name)
	if len(short) > 40 {
		short = short[:40]
	}
	return filepath.Join(dir, ".peertune-node-"+short+"-"+hex.EncodeToString(sum[:8])+".id")
}

// claimIdentity takes the identity of node name in dir: the incarnation
// (and last world) of a crashed predecessor that can be succeeded, or a new
// one.
func claimIdentity(dir, name string) (*identity, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	path := identityPath(dir, name)
	var f *os.File
	for tries := 0; ; tries++ {
		var err error
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, fmt.Errorf("node identity: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("another process is running as node %q with this output directory (it holds %s): give each process its own --node-name or --out", name, path)
			}
			return nil, fmt.Errorf("node identity: lock %s: %w", path, err)
		}
		// A predecessor exiting gracefully may have deleted the file
		// between our open and our lock: then we hold a lock on a file
		// nobody can find. Start again on the path as it is now.
		fi, err1 := f.Stat()
		pi, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(fi, pi) {
			break
		}
		f.Close()
		if tries == 5 {
			return nil, fmt.Errorf("node identity: %s keeps changing under us", path)
		}
	}
	id := &identity{path: path, f: f}
	raw := make([]byte, 1<<20)
	n, _ := f.ReadAt(raw, 0)
	var rec identityRecord
	var prev uint64
	if json.Unmarshal(raw[:n], &rec) == nil {
		fmt.Sscanf(rec.Inc, "%x", &prev)
	}
	switch {
	case prev == 0:
		// No predecessor (or a torn write): a new member.
	case rec.Vote != nil && (rec.Last == nil || rec.Vote.Epoch > rec.Last.Epoch):
		// It died after voting, before learning the outcome: what it is
		// part of is unknown, so it is not taken over.
	default:
		id.inc, id.last = prev, rec.Last
		if id.last != nil {
			id.last.Rank = node.Rank(*id.last, name)
		}
	}
	if id.inc == 0 {
		for id.inc == 0 {
			id.inc = rand.Uint64()
		}
		rec = identityRecord{}
	}
	rec.Inc = fmt.Sprintf("%016x", id.inc)
	rec.Vote = nil
	id.rec = rec
	if err := id.write(); err != nil {
		id.release(false)
		return nil, err
	}
	return id, nil
}

// write replaces the file's content and syncs it. A crash in between
// leaves a file that does not parse: the successor is then a new member.
func (id *identity) write() error {
	data, err := json.Marshal(id.rec)
	if err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	if err := id.f.Truncate(0); err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	if _, err := id.f.WriteAt(append(data, '\n'), 0); err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	if err := id.f.Sync(); err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	return nil
}

// vote records w as voted for, before the vote goes out
// (node.RendezvousOptions.BeforeVote).
func (id *identity) vote(w node.World) error {
	id.rec.Vote = &w
	return id.write()
}

// committed records w as the last committed world.
func (id *identity) committed(w node.World) error {
	id.rec.Last, id.rec.Vote = &w, nil
	return id.write()
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
