package ring

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peertune/peertune/collective"
)

// The helper process is this test binary re-executed as one rank of a ring;
// its listener arrives as file descriptor 3 (so ports stay ephemeral and
// race-free). Config travels in the environment.
const helperEnv = "PEERTUNE_RING_TEST_HELPER"

func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper for TestKilledProcess")
	}
	cfg := testConfig()
	cfg.Rank, _ = strconv.Atoi(os.Getenv("RING_RANK"))
	cfg.Size, _ = strconv.Atoi(os.Getenv("RING_SIZE"))
	cfg.Peers = strings.Split(os.Getenv("RING_PEERS"), ",")
	cfg.Secret, _ = hex.DecodeString(os.Getenv("RING_SECRET"))
	cfg.SegmentBytes, _ = strconv.Atoi(os.Getenv("RING_SEGMENT_BYTES"))
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	c, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float32, 1<<20)
	for { // until killed
		if err := c.AllReduceFloat32(context.Background(), buf, collective.Avg); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKilledProcess SIGKILLs a rank that runs in its own process in the
// middle of a stream of all-reduces: the kernel closes its sockets, and
// every surviving rank must fail with ErrPeerLost within a few seconds.
func TestKilledProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	checkLeaks(t)
	const n = 4
	const victim = 2
	base := testConfig()
	base.SegmentBytes = 64 << 10
	lns, cfgs := bind(t, n, base)

	f, err := lns[victim].(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	lns[victim].Close() // the child owns it now
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1",
		"RING_RANK="+strconv.Itoa(victim), "RING_SIZE="+strconv.Itoa(n),
		"RING_PEERS="+strings.Join(cfgs[0].Peers, ","), "RING_SECRET="+hex.EncodeToString(base.Secret),
		"RING_SEGMENT_BYTES="+strconv.Itoa(base.SegmentBytes))
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()

	survivors := []Config{cfgs[0], cfgs[1], cfgs[3]}
	comms, errs, _ := formRanks(t, survivors, testLogger(t))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	errc := make(chan rankErr, len(comms))
	for i, c := range comms {
		go loopAllReduce(context.Background(), i, c, 1<<20, errc)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, err := range waitErrs(t, 5*time.Second, errc, len(comms)) {
		if !errors.Is(err, collective.ErrPeerLost) {
			t.Errorf("rank %d: want ErrPeerLost, got %v", survivors[i].Rank, err)
		}
		t.Logf("rank %d: %v", survivors[i].Rank, err)
	}
	t.Logf("all survivors failed within %v of the SIGKILL", time.Since(start))
}
