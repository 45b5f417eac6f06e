package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peertune/peertune/trainer"
)

// TestLeadKilledDuringFinalEvaluation: in a 3-node job the lead (rank 0,
// the one that writes the outputs) is SIGKILLed right after the last step,
// while the final evaluation runs (a large validation split makes it last
// seconds). The two survivors must not report success without outputs, nor
// fail: they form a new world, evaluate again, and the new lead writes the
// adapter and summary.json with every step.
func TestLeadKilledDuringFinalEvaluation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes and kills one")
	}
	const steps = 30
	dataPath := writeData(t, 8000)
	dir := t.TempDir()
	ledgers := filepath.Join(dir, "ledger")
	seeds := loopbackSeeds(t, 3)
	env := append(os.Environ(), "PEERTUNE_SECRET=finish-test-secret")
	procs := make([]*peerProc, 3)
	outs := make([]string, 3)
	for i := range procs {
		name := fmt.Sprintf("fin-%d", i)
		outs[i] = filepath.Join(dir, name)
		args := []string{"train", "--model", "tiny", "--init", "random", "--data", dataPath, "--steps", strconv.Itoa(steps),
			"--batch", "12", "--micro-batch", "2", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "0",
			"--val-fraction", "0.9", "--log-format", "json", "--rendezvous-timeout", "2m",
			"--out", outs[i], "--ledger", ledgers, "--bind", seeds[i], "--world-size", "3", "--min-nodes", "2"}
		if i > 0 {
			args = append(args, "--join", seeds[0])
		}
		procs[i] = startPeer(t, filepath.Join(dir, name+".log"), env, args...)
	}
	defer func() {
		for _, p := range procs {
			p.cmd.Process.Kill()
		}
	}()

	deadline := time.Now().Add(5 * time.Minute)
	for maxLedgerStep(t, ledgers) < steps {
		for i, p := range procs {
			select {
			case err := <-p.done:
				t.Fatalf("fin-%d exited before the last step: %v\n%s", i, err, tailLogs(dir))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job stalled (ledger at %d)\n%s", maxLedgerStep(t, ledgers), tailLogs(dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	lead := -1
	for i, p := range procs {
		if worldRank(t, p.log) == 0 {
			lead = i
		}
	}
	if lead < 0 {
		t.Fatalf("no process logged rank 0\n%s", tailLogs(dir))
	}
	// The ledger records a step as its samples are computed; the lead's log
	// says when the step (its all-reduce included) completed.
	lastStep := fmt.Sprintf(`"msg":"step","step":%d,`, steps)
	for {
		raw, err := os.ReadFile(procs[lead].log)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), lastStep) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lead never logged step %d\n%s", steps, tailLogs(dir))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Into the evaluation (it takes seconds: see the log's "took"), so that
	// every survivor has surely completed the last step too.
	time.Sleep(time.Second)
	procs[lead].cmd.Process.Signal(syscall.SIGKILL)
	<-procs[lead].done

	wrote := 0
	for i, p := range procs {
		if i == lead {
			continue
		}
		select {
		case err := <-p.done:
			if err != nil {
				t.Fatalf("survivor fin-%d failed: %v\n%s", i, err, tailLogs(dir))
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("survivor fin-%d did not finish\n%s", i, tailLogs(dir))
		}
		raw, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), "lost a peer during the final evaluation") {
			t.Errorf("fin-%d: the kill did not land in the final evaluation (see its log); the test needs a longer one\n%s", i, raw)
		}
		sraw, err := os.ReadFile(filepath.Join(outs[i], "summary.json"))
		if err != nil {
			continue // not the new lead
		}
		var sum struct {
			Steps     int    `json:"steps"`
			WorldSize int    `json:"world_size"`
			Output    string `json:"output"`
		}
		if err := json.Unmarshal(sraw, &sum); err != nil {
			t.Fatalf("fin-%d summary.json: %v", i, err)
		}
		if sum.Steps != steps || sum.WorldSize != 2 {
			t.Errorf("fin-%d summary: %d steps in a world of %d, want %d steps in the survivors' world of 2", i, sum.Steps, sum.WorldSize, steps)
		}
		if len(adapterTensors(t, outs[i])) == 0 {
			t.Errorf("fin-%d wrote an empty adapter", i)
		}
		wrote++
	}
	if wrote != 1 {
		t.Errorf("%d survivors wrote the outputs, want exactly 1 (the new lead)\n%s", wrote, tailLogs(dir))
	}
}

// worldRank returns the rank in the last "world formed" line of a JSON log,
// or -1.
func worldRank(t *testing.T, path string) int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rank := -1
	for _, line := range strings.Split(string(raw), "\n") {
		var e struct {
			Msg  string `json:"msg"`
			Rank *int   `json:"rank"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "world formed" && e.Rank != nil {
			rank = *e.Rank
		}
	}
	return rank
}

// TestOutputWriteFailureStopsEveryRank: the lead cannot write the outputs
// (summary.json in the shared --out is a directory). Every rank must stop
// with an error after that one attempt, the other naming the lead's
// failure, instead of forming new worlds that would fail alike or waiting
// for ever.
func TestOutputWriteFailureStopsEveryRank(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dataPath := writeData(t, 200)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(filepath.Join(out, "summary.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := loopbackSeeds(t, 2)
	env := append(os.Environ(), "PEERTUNE_SECRET=finish-test-secret")
	procs := make([]*peerProc, 2)
	for i := range procs {
		args := []string{"train", "--model", "tiny", "--init", "random", "--data", dataPath, "--steps", "5",
			"--batch", "4", "--micro-batch", "2", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "0",
			"--log-format", "json", "--rendezvous-timeout", "2m", "--out", out,
			"--bind", seeds[i], "--world-size", "2", "--min-nodes", "2"}
		if i > 0 {
			args = append(args, "--join", seeds[0])
		}
		procs[i] = startPeer(t, filepath.Join(dir, fmt.Sprintf("w%d.log", i)), env, args...)
	}
	defer func() {
		for _, p := range procs {
			p.cmd.Process.Kill()
		}
	}()
	var logs strings.Builder
	for i, p := range procs {
		select {
		case err := <-p.done:
			if err == nil {
				t.Errorf("w%d exited 0 though no outputs could be written", i)
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("w%d did not stop\n%s", i, tailLogs(dir))
		}
		raw, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		logs.Write(raw)
	}
	all := logs.String()
	for _, want := range []string{"summary.json", "the lead could not write the outputs"} {
		if !strings.Contains(all, want) {
			t.Errorf("no process said %q\n%s", want, tailLogs(dir))
		}
	}
	if n := strings.Count(all, `"msg":"evaluation after training"`); n != 2 {
		t.Errorf("%d final evaluations, want 2 (one per rank, no new world)", n)
	}
	if strings.Contains(all, "forming a new world") {
		t.Errorf("a rank formed a new world after the write failure\n%s", tailLogs(dir))
	}
}

// fakeFinish is a finisher whose Finish waits delay and then returns err.
type fakeFinish struct {
	lead  bool
	delay time.Duration
	err   error
}

func (f fakeFinish) Lead() bool { return f.lead }

func (f fakeFinish) Finish(ctx context.Context) (*trainer.Summary, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	return &trainer.Summary{}, nil
}

// finishWorld's contract over a real 3-rank ring: success only when every
// rank finished, wrote only on the lead; a lead that could not write fails
// every rank, the others naming it; a lead cancelled after writing reports
// that it wrote.
func TestFinishWorld(t *testing.T) {
	run := func(t *testing.T, sessions []fakeFinish, ctxs []context.Context) ([]bool, []error) {
		t.Helper()
		comms := loopbackRing(t, len(sessions), 1)
		wrote, errs := make([]bool, len(sessions)), make([]error, len(sessions))
		var wg sync.WaitGroup
		for i := range sessions {
			wg.Go(func() { wrote[i], errs[i] = finishWorld(ctxs[i], sessions[i], comms[i]) })
		}
		wg.Wait()
		return wrote, errs
	}
	bg := []context.Context{context.Background(), context.Background(), context.Background()}

	t.Run("all finish", func(t *testing.T) {
		wrote, errs := run(t, []fakeFinish{{lead: true, delay: 50 * time.Millisecond}, {}, {delay: 20 * time.Millisecond}}, bg)
		for i, err := range errs {
			if err != nil {
				t.Errorf("rank %d: %v", i, err)
			}
		}
		if !wrote[0] || wrote[1] || wrote[2] {
			t.Errorf("wrote %v, want only the lead", wrote)
		}
	})

	t.Run("the lead cannot write", func(t *testing.T) {
		disk := &trainer.OutputError{Err: errors.New("save to out: no space left on device")}
		wrote, errs := run(t, []fakeFinish{{lead: true, err: disk}, {}, {}}, bg)
		if !errors.As(errs[0], new(*trainer.OutputError)) || wrote[0] {
			t.Errorf("lead: wrote %v, err %v; want its OutputError", wrote[0], errs[0])
		}
		for i := 1; i < 3; i++ {
			if errs[i] == nil || !strings.Contains(errs[i].Error(), "the lead could not write the outputs") || lostPeer(errs[i]) {
				t.Errorf("rank %d: %v; want a fatal error naming the lead's failure", i, errs[i])
			}
		}
	})

	t.Run("a rank's evaluation fails", func(t *testing.T) {
		// It does not join the confirmation; the others see a lost peer
		// once its ring connections close (here: when the test closes them).
		boom := errors.New("evaluation failed")
		comms := loopbackRing(t, 2, 1)
		errc := make(chan error, 1)
		go func() { _, err := finishWorld(context.Background(), fakeFinish{lead: true}, comms[0]); errc <- err }()
		if _, err := finishWorld(context.Background(), fakeFinish{err: boom}, comms[1]); !errors.Is(err, boom) {
			t.Errorf("failing rank: %v", err)
		}
		comms[1].Close()
		if err := <-errc; !lostPeer(err) {
			t.Errorf("lead: %v; want a lost peer (the survivors form a new world)", err)
		}
	})

	t.Run("lead stopped after writing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctxs := []context.Context{ctx, context.Background(), context.Background()}
		go func() { time.Sleep(300 * time.Millisecond); cancel() }()
		// Rank 2 is still evaluating when the lead, done writing, is stopped.
		wrote, errs := run(t, []fakeFinish{{lead: true}, {}, {delay: 2 * time.Second}}, ctxs)
		if !wrote[0] || errs[0] == nil {
			t.Errorf("lead: wrote %v, err %v; want wrote and an error (the confirmation was cut short)", wrote[0], errs[0])
		}
		if errs[2] == nil {
			t.Error("rank 2 confirmed a job whose lead stopped")
		}
	})
}
