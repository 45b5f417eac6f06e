package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/node"
)

// statusCluster starts two real nodes in this process, both training the
// same job: "a" at step 10, "b" two steps or more behind (a straggler).
func statusCluster(t *testing.T, secret string) (seed string) {
	t.Helper()
	start := func(name string, seeds []string, mut func(*node.Meta)) *node.Node {
		cfg := node.DefaultConfig()
		cfg.Name = name
		cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
		cfg.Seeds = seeds
		cfg.SecretKey = node.DeriveKey([]byte(secret))
		cfg.JobHash = node.HashJobConfig([]byte("status test job"))
		cfg.Endpoint = map[string]string{"node-a": "127.0.0.1:29500", "node-b": "127.0.0.1:29501"}[name]
		cfg.Device = "cpu"
		cfg.Budget = 3 << 30
		cfg.JoinTimeout = 5 * time.Second
		n, err := node.Start(context.Background(), cfg, nil)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { n.Shutdown() })
		if err := n.UpdateMeta(mut); err != nil {
			t.Fatal(err)
		}
		return n
	}
	a := start("node-a", nil, func(m *node.Meta) { m.State, m.Epoch, m.Step, m.StepMillis = node.StateTraining, 3, 10, 120 })
	b := start("node-b", []string{a.Addr()}, func(m *node.Meta) { m.State, m.Epoch, m.Step, m.StepMillis = node.StateTraining, 3, 7, 130 })
	deadline := time.Now().Add(5 * time.Second)
	for {
		ms := a.Members()
		if len(ms) == 2 && ms[1].Meta.Step == 7 && len(b.Members()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two nodes did not see each other")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b.Addr() // any node will do
}

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStatusTableAndJSON(t *testing.T) {
	const secret = "status test secret"
	seed := statusCluster(t, secret)
	o := statusOptions{join: seed, secretFile: writeSecret(t, secret), wait: 500 * time.Millisecond, timeout: 5 * time.Second}

	start := time.Now()
	var out bytes.Buffer
	if err := runStatus(context.Background(), nil, o, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("status took %s:\n%s", time.Since(start), out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, 2 nodes and a summary, got %d lines", len(lines))
	}
	for _, col := range []string{"NODE", "STATE", "EPOCH", "STEP", "STEP_MS", "DEVICE", "BUDGET", "ENDPOINT", "ALIVE", "STRAGGLER"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header lacks %s: %q", col, lines[0])
		}
	}
	// Columns: NODE STATE EPOCH STEP STEP_MS DEVICE BUDGET ENDPOINT ALIVE STRAGGLER.
	want := []string{
		"node-a training 3 10 120 cpu 3 GiB 127.0.0.1:29500 yes -",
		"node-b training 3 7 130 cpu 3 GiB 127.0.0.1:29501 yes STRAGGLER: at step 7, others at 10",
	}
	for i, w := range want {
		if got := strings.Join(strings.Fields(lines[1+i]), " "); got != w {
			t.Errorf("row %d:\n got %q\nwant %q", i, got, w)
		}
	}
	if strings.Contains(out.String(), "status-") || strings.Contains(out.String(), "observer") {
		t.Error("the observer lists itself")
	}
	if lines[3] != "2 nodes: 2 training; 1 straggler(s)" {
		t.Errorf("summary %q", lines[3])
	}

	out.Reset()
	o.json = true
	if err := runStatus(context.Background(), nil, o, &out); err != nil {
		t.Fatal(err)
	}
	var rows []statusRow
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r statusRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		rows = append(rows, r)
	}
	if len(rows) != 2 {
		t.Fatalf("%d JSON rows:\n%s", len(rows), out.String())
	}
	a, b := rows[0], rows[1]
	if a.ID != "node-a" || a.State != "training" || a.Step != 10 || a.StepMillis != 120 || a.Epoch != 3 || a.Straggler || !a.Alive ||
		a.Device != "cpu" || a.Budget != 3<<30 || a.Endpoint != "127.0.0.1:29500" || !strings.HasPrefix(a.Gossip, "127.0.0.1:") || len(a.JobHash) != 64 {
		t.Errorf("node-a: %+v", a)
	}
	if b.ID != "node-b" || b.Step != 7 || !b.Straggler || b.Why != "at step 7, others at 10" {
		t.Errorf("node-b: %+v", b)
	}

	// The same through the command's flags.
	cmd := newStatusCmd(&globalOptions{log: zap.NewNop()})
	out.Reset()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--join", seed, "--secret-file", o.secretFile, "--wait", "200ms", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if k := strings.Count(out.String(), "\n"); k != 2 || !strings.Contains(out.String(), `"straggler_why":"at step 7, others at 10"`) {
		t.Errorf("status --json printed:\n%s", out.String())
	}
}

func TestStatusErrors(t *testing.T) {
	const secret = "status test secret"
	seed := statusCluster(t, secret)
	ctx := context.Background()
	base := statusOptions{join: seed, wait: 100 * time.Millisecond, timeout: time.Second}

	o := base
	o.secretFile = writeSecret(t, "another secret")
	err := runStatus(ctx, nil, o, &bytes.Buffer{})
	if !errors.Is(err, node.ErrGossipKey) || !strings.Contains(err.Error(), "did not accept our gossip key") {
		t.Errorf("wrong secret: %v", err)
	}

	o = base
	t.Setenv(node.SecretEnv, "")
	if err := runStatus(ctx, nil, o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "no gossip secret") {
		t.Errorf("no secret: %v", err)
	}

	o = base
	o.secretFile = writeSecret(t, secret)
	o.join = "127.0.0.1:1"
	o.timeout = 500 * time.Millisecond
	err = runStatus(ctx, nil, o, &bytes.Buffer{})
	if err == nil || errors.Is(err, node.ErrGossipKey) || !strings.Contains(err.Error(), "cannot reach the cluster at 127.0.0.1:1") {
		t.Errorf("unreachable seed: %v", err)
	}

	o.join = ""
	if err := runStatus(ctx, nil, o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Errorf("no --join: %v", err)
	}
}
