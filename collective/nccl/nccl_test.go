package nccl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireLib returns the default NCCL, or skips the test naming what is
// missing and how to get it.
func requireLib(t *testing.T) *Library {
	t.Helper()
	lib, err := Default()
	if errors.Is(err, ErrLibraryNotFound) {
		t.Skipf("skipping: NCCL (libnccl.so.2) is not installed; scripts/install-pydeps.sh installs nvidia-nccl-cu12. %v", err)
	}
	if err != nil {
		t.Fatalf("Default: %v", err)
	}
	return lib
}

func TestNCCLLoadVersionUniqueID(t *testing.T) {
	lib := requireLib(t)
	v := lib.Version()
	t.Logf("loaded NCCL %v from %s (found by: %s); ncclCommShrink: %v", v, lib.Path(), lib.Source(), lib.CanShrink())
	if v.Major != 2 || !v.AtLeast(minVersion) {
		t.Fatalf("version %v: want 2.x >= %v", v, minVersion)
	}
	if got := versionFromCode(v.Code()); got != v {
		t.Fatalf("version code %d decodes to %v, want %v", v.Code(), got, v)
	}
	if lib.CanShrink() != v.AtLeast(shrinkVersion) {
		t.Errorf("CanShrink %v for NCCL %v", lib.CanShrink(), v)
	}
	a, err := NewUniqueID()
	if err != nil {
		t.Fatalf("NewUniqueID: %v", err)
	}
	b, err := lib.NewUniqueID()
	if err != nil {
		t.Fatalf("NewUniqueID (second): %v", err)
	}
	if a == ([IDBytes]byte{}) || b == ([IDBytes]byte{}) {
		t.Fatal("unique id is all zero")
	}
	if a == b {
		t.Fatal("two unique ids are equal")
	}
	// The id survives the rendezvous encoding.
	blob, err := MarshalID(a)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := UnmarshalID(blob); err != nil || got != a {
		t.Fatalf("id round trip: %v, equal %v", err, got == a)
	}
	if l2, err := Default(); err != nil || l2 != lib {
		t.Fatalf("Default is not loaded once: %p %p %v", l2, lib, err)
	}
}

// The helper half of TestNCCLCommInitWithoutGPUFails: runs in a child
// process (this test binary re-executed), so that a crash inside NCCL or the
// CUDA runtime fails the parent test instead of killing the whole suite.
const initHelperEnv = "PEERTUNE_NCCL_INIT_HELPER"

func TestNCCLInitHelperProcess(t *testing.T) {
	if os.Getenv(initHelperEnv) != "1" {
		t.Skip("helper for TestNCCLCommInitWithoutGPUFails")
	}
	lib := requireLib(t)
	id, err := lib.NewUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Rank, cfg.Size, cfg.ID = 0, 1, id
	cfg.InitTimeout = 30 * time.Second
	comm, err := New(context.Background(), cfg, nil)
	if err == nil {
		comm.Close()
		fmt.Println("NEW_OK")
	} else {
		fmt.Printf("NEW_ERR is_no_gpu=%v: %v\n", errors.Is(err, ErrNoGPU), err)
	}
	// The same without our driver check: NCCL itself must fail cleanly.
	err = lib.initUnbound(30 * time.Second)
	var ne *Error
	if errors.As(err, &ne) {
		fmt.Printf("RAW_ERR code=%v: %v\n", ne.Code, err)
	} else {
		fmt.Printf("RAW_OTHER: %v\n", err)
	}
	fmt.Println("HELPER_DONE")
}

func TestNCCLCommInitWithoutGPUFails(t *testing.T) {
	lib := requireLib(t)
	if cu, err := lib.driver(); err == nil {
		if n, r := cu.deviceCount(); r == cudaSuccess && n > 0 {
			t.Skipf("skipping: this machine has %d CUDA device(s); the test checks the no-GPU path", n)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNCCLInitHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), initHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	text := string(out)
	t.Logf("child output:\n%s", text)
	if err != nil {
		t.Fatalf("the child process died (%v): creating a communicator without a GPU must fail with an error, not crash", err)
	}
	if !strings.Contains(text, "HELPER_DONE") {
		t.Fatal("the child did not finish")
	}
	if strings.Contains(text, "NEW_OK") {
		t.Fatal("New succeeded without a GPU")
	}
	newLine := lineWith(text, "NEW_ERR")
	if !strings.Contains(newLine, "is_no_gpu=true") {
		t.Errorf("New's error does not wrap ErrNoGPU: %s", newLine)
	}
	for _, want := range []string{"CUDA", "NCCL " + lib.Version().String()} {
		if !strings.Contains(newLine, want) {
			t.Errorf("New's error %q does not mention %q", newLine, want)
		}
	}
	rawLine := lineWith(text, "RAW_")
	if !strings.HasPrefix(rawLine, "RAW_ERR code=ncclUnhandledCudaError") {
		t.Errorf("NCCL's own init without a GPU: got %q, want an ncclUnhandledCudaError", rawLine)
	}
	if !strings.Contains(strings.ToLower(rawLine), "cuda") {
		t.Errorf("NCCL's error %q does not say the problem is CUDA", rawLine)
	}
}

func lineWith(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestNCCLErrorStringWrapping(t *testing.T) {
	lib := requireLib(t)
	e := lib.errorf("ncclAllReduce", RemoteError, 0)
	if !strings.Contains(e.Text, "remote process exited") {
		t.Errorf("ncclGetErrorString(ncclRemoteError) = %q", e.Text)
	}
	if got := lib.errorf("ncclCommInitRankConfig", InProgress, 0).Text; !strings.Contains(got, "in progress") {
		t.Errorf("ncclGetErrorString(ncclInProgress) = %q: the enumerator value 7 is wrong?", got)
	}
	if got := lib.errorf("x", UnhandledCudaError, 0).Text; !strings.Contains(got, "cuda") {
		t.Errorf("ncclGetErrorString(ncclUnhandledCudaError) = %q", got)
	}
	msg := e.Error()
	for _, want := range []string{"ncclAllReduce", e.Text, "ncclRemoteError"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Error() %q lacks %q", msg, want)
		}
	}
	// The way Comm wraps it: sentinel and NCCL's details both reachable.
	wrapped := fmt.Errorf("nccl: rank 1: allreduce #3: %w: %w", errPeerLostForTest, e)
	var got *Error
	if !errors.As(wrapped, &got) || got.Code != RemoteError {
		t.Fatalf("errors.As: %v", wrapped)
	}
	if !errors.Is(wrapped, errPeerLostForTest) {
		t.Fatal("errors.Is lost the sentinel")
	}
}
