package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peertune/peertune/trainer/model/safetensors"
)

// peertuneBin is the peertune binary built once for the tests that run real
// processes.
var peertuneBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peertune-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	peertuneBin = filepath.Join(dir, "peertune")
	build := exec.Command("go", "build", "-o", peertuneBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build peertune: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// peerProc is one peertune process of a multi-process test.
type peerProc struct {
	cmd  *exec.Cmd
	log  string     // its stdout and stderr
	done chan error // cmd.Wait's result, sent once
}

// startPeer starts peertune with env and args, its output going to logPath.
func startPeer(t *testing.T, logPath string, env []string, args ...string) *peerProc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &peerProc{cmd: exec.Command(peertuneBin, args...), log: logPath, done: make(chan error, 1)}
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = env, logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	return p
}

// loopbackSeeds returns n free gossip addresses on 127.0.0.1.
func loopbackSeeds(t *testing.T, n int) []string {
	t.Helper()
	seeds := make([]string, n)
	for i := range seeds {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		seeds[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return seeds
}

func writeData(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"instruction":"Add %d and %d to the total %d","response":"%d"}`+"\n", i, i*7%13, i*31%97, i+i*7%13)
	}
	p := filepath.Join(t.TempDir(), "data.jsonl")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(peertuneBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		t.Fatalf("peertune %v did not finish within %v:\n%s", args, timeout, out.String())
		return "", nil
	}
}

func trainLosses(t *testing.T, dir string) []float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m struct {
			Kind string  `json:"kind"`
			Loss float64 `json:"loss"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m.Kind == "train" {
			losses = append(losses, m.Loss)
		}
	}
	return losses
}

func adapterTensors(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, n := range f.Names() {
		if out[n], err = f.Float32(n); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestWorldSizeInvariance: one process and three processes (real memberlist,
// real TCP ring) with the same seed and global batch take the same steps: the
// per-step losses agree within 1e-4 and the final adapters within 1e-3.
func TestWorldSizeInvariance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := writeData(t, 240)
	common := []string{"train", "--model", "tiny", "--init", "random", "--data", data, "--steps", "14", "--batch", "9",
		"--micro-batch", "2", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "7", "--check-every", "2", "--log-format", "json"}
	one, three := t.TempDir(), t.TempDir()
	if out, err := run(t, 2*time.Minute, append(common, "--out", one)...); err != nil {
		t.Fatalf("--nodes 1: %v\n%s", err, out)
	}
	out, err := run(t, 2*time.Minute, append(common, "--nodes", "3", "--out", three)...)
	if err != nil {
		t.Fatalf("--nodes 3: %v\n%s", err, out)
	}
	for _, r := range []string{"[rank 0]", "[rank 1]", "[rank 2]"} {
		if !strings.Contains(out, r) {
			t.Errorf("no log lines prefixed %q", r)
		}
	}
	if !strings.Contains(out, `"size": 3`) && !strings.Contains(out, `"size":3`) {
		t.Errorf("no world of size 3 formed:\n%s", out)
	}
	l1, l3 := trainLosses(t, one), trainLosses(t, three)
	if len(l1) != 14 || len(l3) != 14 {
		t.Fatalf("%d and %d logged steps, want 14", len(l1), len(l3))
	}
	for s := range l1 {
		if rel := math.Abs(l1[s]-l3[s]) / math.Abs(l1[s]); rel > 1e-4 {
			t.Errorf("step %d: loss %.7f with 1 node, %.7f with 3 (rel %.2e)", s+1, l1[s], l3[s], rel)
		}
	}
	a1, a3 := adapterTensors(t, one), adapterTensors(t, three)
	if len(a1) == 0 || len(a1) != len(a3) {
		t.Fatalf("adapters hold %d and %d tensors", len(a1), len(a3))
	}
	for name, v := range a1 {
		w := a3[name]
		var num, den float64
		for i := range v {
			num = math.Max(num, math.Abs(float64(v[i]-w[i])))
			den = math.Max(den, math.Abs(float64(v[i])))
		}
		if num/den > 1e-3 {
			t.Errorf("%s differs by %.2e relative", name, num/den)
		}
	}
}

// TestLocalClusterFailureExitsNonZero: when the peers fail (here: a data file
// that does not exist), the launcher reports it and exits non-zero.
func TestLocalClusterFailureExitsNonZero(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	out, err := run(t, time.Minute, "train", "--nodes", "2", "--model", "tiny", "--init", "random",
		"--data", filepath.Join(t.TempDir(), "missing.jsonl"), "--out", t.TempDir())
	if err == nil {
		t.Fatalf("launcher exited 0 although its peers failed:\n%s", out)
	}
	if !strings.Contains(out, "missing.jsonl") || !strings.Contains(out, "peer") {
		t.Fatalf("output does not say what failed:\n%s", out)
	}
}

// TestLocalClusterStopsOnInterrupt: Ctrl-C (SIGINT to the launcher) stops every
// peer process promptly.
func TestLocalClusterStopsOnInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := writeData(t, 400)
	cmd := exec.Command(peertuneBin, "train", "--nodes", "2", "--model", "tiny", "--init", "random", "--data", data,
		"--steps", "100000", "--batch", "8", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "0", "--out", t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so that we can find children it leaves behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), `"step"`) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("training did not start:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("interrupted launcher exited 0")
		}
		t.Logf("stopped %v after SIGINT", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("launcher still running 30s after SIGINT")
	}
	// No child of the launcher's group survives.
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(-cmd.Process.Pid, 0); err == nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("peer processes still alive after the launcher exited")
	}
}

// TestBenchAllReduceProcesses: the benchmark runs real processes and reports
// the fields users compare (figures are not asserted: they are timings).
func TestBenchAllReduceProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	out, err := run(t, time.Minute, "bench", "allreduce", "--nodes", "3", "--size", "1MiB", "--iters", "2", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res map[string]float64
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out)
	}
	if res["ranks"] != 3 || res["bytes"] != 1<<20 {
		t.Fatalf("ranks %v bytes %v", res["ranks"], res["bytes"])
	}
	for _, k := range []string{"seconds", "algbw_gbps", "busbw_gbps", "loopback_tcp_gbps"} {
		if !(res[k] > 0) {
			t.Errorf("%s = %v, want a positive figure", k, res[k])
		}
	}
	if got, want := res["busbw_gbps"]/res["algbw_gbps"], 2.0*2/3; math.Abs(got-want) > 0.01 {
		t.Errorf("busbw/algbw = %.3f, want 2(N-1)/N = %.3f", got, want)
	}
}

// TestResumeOnMoreNodes: a job checkpointed by one node and resumed on two
// continues the same loss curve (within 1e-4) as the uninterrupted run.
func TestResumeOnMoreNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := writeData(t, 240)
	common := []string{"train", "--model", "tiny", "--init", "random", "--data", data, "--steps", "10", "--batch", "8",
		"--micro-batch", "2", "--seq-len", "96", "--eval-examples", "0", "--eval-every", "0", "--lr", "5e-4"}
	straight, split := t.TempDir(), t.TempDir()
	if out, err := run(t, time.Minute, append(common, "--out", straight)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := run(t, time.Minute, append(common, "--out", split, "--checkpoint-every", "5", "--keep", "0")...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// As if everything had been killed after step 5: drop the later checkpoint.
	if err := os.RemoveAll(filepath.Join(split, "checkpoints", "step-000010")); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, 2*time.Minute, append(common, "--out", split, "--resume", "--nodes", "2")...)
	if err != nil {
		t.Fatalf("resume on 2 nodes: %v\n%s", err, out)
	}
	if !strings.Contains(out, "resumed") {
		t.Fatalf("no resume in the log:\n%s", out)
	}
	a, b := trainLosses(t, straight), trainLosses(t, split)
	if len(a) != 10 || len(b) != 10 {
		t.Fatalf("%d and %d logged steps", len(a), len(b))
	}
	for s := range a {
		if rel := math.Abs(a[s]-b[s]) / a[s]; rel > 1e-4 {
			t.Errorf("step %d: %.7f straight, %.7f resumed on 2 nodes", s+1, a[s], b[s])
		}
	}
	x, y := adapterTensors(t, straight), adapterTensors(t, split)
	for name, v := range x {
		var num, den float64
		for i := range v {
			num = math.Max(num, math.Abs(float64(v[i]-y[name][i])))
			den = math.Max(den, math.Abs(float64(v[i])))
		}
		if num/den > 1e-3 {
			t.Errorf("%s differs by %.2e relative", name, num/den)
		}
	}
}
