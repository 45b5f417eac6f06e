package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/data"
)

// chaosNode is one peer process of the chaos test.
type chaosNode struct {
	*peerProc
	name string
}

// TestChaosKillRejoin runs 4 peer processes, SIGKILLs a random one at random
// steps several times and restarts it so that it rejoins; the job must
// complete. From the ledgers the nodes write, no sample of a completed step is
// lost or counted twice, and the final adapter matches an uninterrupted run's.
// PEERTUNE_CHAOS_KILLS sets the number of kills (make chaos runs 20).
func TestChaosKillRejoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes and kills them")
	}
	kills := 3
	if v := os.Getenv("PEERTUNE_CHAOS_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	// A fixed length, however many kills: over longer runs Adam turns the
	// float rounding of changing world sizes into visible drift, and the
	// comparison with the uninterrupted run would measure that, not loss.
	const steps = 300
	dataPath := writeData(t, 400)
	dir := t.TempDir()
	common := []string{"train", "--model", "tiny", "--init", "random", "--data", dataPath, "--steps", strconv.Itoa(steps),
		"--batch", "12", "--micro-batch", "3", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "0",
		"--check-every", "5", "--log-format", "json", "--rendezvous-timeout", "2m",
		// A learning rate at which float rounding (world sizes change the
		// summation order) is not amplified by Adam into visible drift.
		"--lr", "5e-4"}

	// The reference: the same job without interruptions, on one node.
	ref := filepath.Join(dir, "ref")
	if out, err := run(t, 3*time.Minute, append(common, "--out", ref)...); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}

	out := filepath.Join(dir, "out")
	ledgers := filepath.Join(dir, "ledger")
	env := append(os.Environ(), "PEERTUNE_SECRET=chaos-test-secret")
	seeds := loopbackSeeds(t, 4)
	start := func(i, gen int) *chaosNode {
		name := fmt.Sprintf("n%d-g%d", i, gen)
		args := append(append([]string(nil), common...), "--out", out, "--ledger", ledgers, "--node-name", name,
			"--bind", seeds[i], "--world-size", "4", "--min-nodes", "1")
		var join []string
		for j, s := range seeds {
			if j != i {
				join = append(join, s)
			}
		}
		if i > 0 || gen > 0 {
			args = append(args, "--join", strings.Join(join, ","))
		}
		return &chaosNode{peerProc: startPeer(t, filepath.Join(dir, name+".log"), env, args...), name: name}
	}
	nodes := make([]*chaosNode, 4)
	for i := range nodes {
		nodes[i] = start(i, 0)
	}
	defer func() {
		for _, n := range nodes {
			n.cmd.Process.Kill()
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	killAt := make([]int, kills)
	for k := range killAt {
		lo := 20 + k*(steps-60)/max(kills, 1)
		killAt[k] = lo + rng.IntN(max((steps-60)/max(kills, 1)/2, 1))
	}
	deadline := time.Now().Add(10 * time.Minute)
	gen := make([]int, 4)
	for k := 0; k < kills; k++ {
		for maxLedgerStep(t, ledgers) < killAt[k] {
			if time.Now().After(deadline) {
				t.Fatalf("job stalled before kill %d at step %d (ledger at %d); logs in %s", k+1, killAt[k], maxLedgerStep(t, ledgers), dir)
			}
			time.Sleep(20 * time.Millisecond)
		}
		victim := rng.IntN(4)
		nodes[victim].cmd.Process.Signal(syscall.SIGKILL)
		<-nodes[victim].done
		t.Logf("kill %d: SIGKILL %s at ledger step %d", k+1, nodes[victim].name, maxLedgerStep(t, ledgers))
		gen[victim]++
		nodes[victim] = start(victim, gen[victim])
	}
	for _, n := range nodes {
		select {
		case err := <-n.done:
			if err != nil {
				raw, _ := os.ReadFile(n.log)
				t.Fatalf("%s failed: %v (logs in %s)\n%s\n== %s, whole:\n%s", n.name, err, dir, tailLogs(dir), n.name, raw)
			}
			n.done <- nil
		case <-time.After(time.Until(deadline)):
			t.Fatalf("%s did not finish (logs in %s)", n.name, dir)
		}
	}

	// The ledgers: for every step, the attempt that counts is the one of the
	// latest world; its samples must be exactly the step's global slice.
	cfg := trainer.DefaultConfig()
	cfg.Data, cfg.SeqLen = dataPath, 96
	ds, err := trainer.LoadDataset(&cfg, data.ByteTokenizer{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	order, err := data.NewOrder(cfg.Seed, len(ds.Train), 12)
	if err != nil {
		t.Fatal(err)
	}
	attempts := readLedgers(t, ledgers)
	for s := 1; s <= steps; s++ {
		byEpoch := attempts[s]
		if len(byEpoch) == 0 {
			t.Fatalf("step %d: no ledger records", s)
		}
		var last uint64
		for e := range byEpoch {
			last = max(last, e)
		}
		got := byEpoch[last]
		sort.Strings(got)
		var want []string
		for _, smp := range order.Step(s - 1) {
			want = append(want, ds.Train[smp.Index].ID)
		}
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("step %d (epoch %d): samples %v, want each of %v exactly once", s, last, got, want)
		}
	}
	a, b := adapterTensors(t, ref), adapterTensors(t, out)
	for name, v := range a {
		w := b[name]
		var num, den float64
		for i := range v {
			num = math.Max(num, math.Abs(float64(v[i]-w[i])))
			den = math.Max(den, math.Abs(float64(v[i])))
		}
		if num/den > 1e-3 {
			t.Errorf("%s differs from the uninterrupted run by %.2e relative", name, num/den)
		}
	}
	logRecoveries(t, out)
}

func maxLedgerStep(t *testing.T, dir string) int {
	best := 0
	for s := range readLedgers(t, dir) {
		best = max(best, s)
	}
	return best
}

// readLedgers returns step -> world epoch -> sample IDs.
func readLedgers(t *testing.T, dir string) map[int]map[uint64][]string {
	out := map[int]map[uint64][]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var e ledgerEntry
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue // a line cut by SIGKILL
			}
			if out[e.Step] == nil {
				out[e.Step] = map[uint64][]string{}
			}
			out[e.Step][e.Epoch] = append(out[e.Step][e.Epoch], e.IDs...)
		}
		fh.Close()
	}
	return out
}

// logRecoveries reports the recovery times recorded in metrics.jsonl.
func logRecoveries(t *testing.T, out string) {
	raw, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		return
	}
	var secs []float64
	for _, line := range strings.Split(string(raw), "\n") {
		var m struct {
			Kind    string  `json:"kind"`
			Seconds float64 `json:"seconds"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && m.Kind == "recovery" {
			secs = append(secs, m.Seconds)
		}
	}
	if len(secs) == 0 {
		return
	}
	sort.Float64s(secs)
	t.Logf("recovery times (failure noticed -> next step completed): median %.2fs, worst %.2fs, n=%d: %v",
		secs[len(secs)/2], secs[len(secs)-1], len(secs), secs)
}
