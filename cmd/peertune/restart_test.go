package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTwoNodeCrashRestartSameName: in a 2-node job, one node is SIGKILLed
// and restarted with the same --node-name and --out. The survivor alone is
// not a majority of the last world; the restarted process takes over its
// predecessor's identity (identity file) and counts as that member, so the
// two go on and the job completes with every step, without
// --allow-minority. (A restart that could not take the identity over would
// wait for ever: TestCrashRestartUnderSameNameWaits in node.)
func TestTwoNodeCrashRestartSameName(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes and kills one")
	}
	const steps = 300
	dataPath := writeData(t, 200)
	dir := t.TempDir()
	ledgers := filepath.Join(dir, "ledger")
	seeds := loopbackSeeds(t, 2)
	env := append(os.Environ(), "PEERTUNE_SECRET=restart-test-secret")
	start := func(i, gen int) (*exec.Cmd, chan error) {
		name := fmt.Sprintf("pair-%d", i)
		args := []string{"train", "--model", "tiny", "--init", "random", "--data", dataPath, "--steps", strconv.Itoa(steps),
			"--batch", "12", "--micro-batch", "3", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "0",
			"--log-format", "json", "--rendezvous-timeout", "2m", "--lr", "5e-4",
			"--out", filepath.Join(dir, name), "--ledger", ledgers, "--node-name", name,
			"--bind", seeds[i], "--join", seeds[1-i], "--world-size", "2", "--min-nodes", "1"}
		p := startPeer(t, filepath.Join(dir, fmt.Sprintf("%s-g%d.log", name, gen)), env, args...)
		return p.cmd, p.done
	}
	a, aDone := start(0, 0)
	b, bDone := start(1, 0)
	defer func() { a.Process.Kill(); b.Process.Kill() }()

	deadline := time.Now().Add(5 * time.Minute)
	for maxLedgerStep(t, ledgers) < 30 {
		select {
		case err := <-aDone:
			t.Fatalf("pair-0 exited before the kill: %v\n%s", err, tailLogs(dir))
		case err := <-bDone:
			t.Fatalf("pair-1 exited before the kill: %v\n%s", err, tailLogs(dir))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("job stalled before the kill (ledger at %d)\n%s", maxLedgerStep(t, ledgers), tailLogs(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Process.Signal(syscall.SIGKILL)
	<-bDone
	killedAt := maxLedgerStep(t, ledgers)
	b, bDone = start(1, 1)

	for name, done := range map[string]chan error{"pair-0": aDone, "pair-1 (restarted)": bDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s failed: %v\n%s", name, err, tailLogs(dir))
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("%s did not finish: the survivor must not wait for ever once its peer is back\n%s", name, tailLogs(dir))
		}
	}
	if got := maxLedgerStep(t, ledgers); got != steps {
		t.Errorf("ledger ends at step %d, want %d", got, steps)
	}
	// The restarted process reused its predecessor's incarnation: both
	// generations log the same one.
	incs := map[string]bool{}
	for gen := 0; gen < 2; gen++ {
		raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("pair-1-g%d.log", gen)))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if i := strings.Index(line, `"incarnation":"`); i >= 0 {
				incs[line[i:i+len(`"incarnation":"`)+16]] = true
				break
			}
		}
	}
	if len(incs) != 1 {
		t.Errorf("the restarted pair-1 did not take over its predecessor's incarnation: %v", incs)
	}
	t.Logf("killed pair-1 at step %d; both finished %d steps", killedAt, steps)
}

// tailLogs returns the last lines of every process log in dir.
func tailLogs(dir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(f), strings.Join(lines[max(0, len(lines)-6):], "\n"))
	}
	return b.String()
}
