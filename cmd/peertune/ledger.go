package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/peertune/peertune/node"
)

// ledger records, for every step attempt, the IDs of the samples this node
// computed, one JSON line each, written before the step's all-reduce. A step
// may be attempted again in a new world after a failure; the attempt that
// counts is the one of the highest world epoch. The chaos test checks from
// these files that no sample of a completed step is lost or counted twice.
type ledger struct {
	mu sync.Mutex
	f  *os.File
}

func openLedger(dir, nodeID string) (*ledger, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--ledger: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, nodeID+".jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--ledger: %w", err)
	}
	return &ledger{f: f}, nil
}

// ledgerEntry is one line of a ledger file.
type ledgerEntry struct {
	Step  int      `json:"step"`
	Epoch uint64   `json:"epoch"`
	Rank  int      `json:"rank"`
	Size  int      `json:"size"`
	IDs   []string `json:"ids"`
}

func (l *ledger) record(step int, w *node.World, ids []string) {
	e := ledgerEntry{Step: step, IDs: ids}
	if w != nil {
		e.Epoch, e.Rank, e.Size = w.Epoch, w.Rank, w.Size
	}
	raw, _ := json.Marshal(e)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Write(append(raw, '\n'))
	// Synced so that a SIGKILL right after cannot lose an attempt whose
	// gradient may already have been all-reduced.
	l.f.Sync()
}

func (l *ledger) Close() error { return l.f.Close() }
