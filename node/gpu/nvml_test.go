package gpu

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

const gib = 1 << 30

// mockServer returns a DGX mock with the functions its factory leaves unset
// set: the memory figures and the running-process list, with pid holding
// procUsed on device 0.
func mockServer(s *server.Server, pid int, procUsed uint64) *server.Server {
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		total := dev.MemoryInfo.Total
		used := uint64(i+1) * gib
		dev.MemoryInfo = nvml.Memory{Total: total, Used: used, Free: total - used}
		procs := []nvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 512 << 20}}
		if i == 0 {
			procs = append(procs, nvml.ProcessInfo{Pid: uint32(pid), UsedGpuMemory: procUsed})
		}
		dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return procs, nvml.SUCCESS }
	}
	return s
}

func TestProbeH100(t *testing.T) {
	s := mockServer(dgxh100.New(), 77, 3*gib)
	inv, err := ProbeWith(context.Background(), s, 77)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != 8 || inv.Driver != "550.54.15" {
		t.Fatalf("inventory %+v", inv)
	}
	d0, d7 := inv.Devices[0], inv.Devices[7]
	if d0.Name != "NVIDIA H100 80GB HBM3" || !strings.HasPrefix(d0.UUID, "GPU-") || d0.Total != 81920<<20 || d0.Used != gib || d0.Free != d0.Total-gib {
		t.Errorf("device 0: %+v", d0)
	}
	if !d0.ProcessListed || d0.ProcessUsed != 3*gib {
		t.Errorf("device 0: this process's memory %d (listed %v), want 3 GiB", d0.ProcessUsed, d0.ProcessListed)
	}
	if d7.Index != 7 || d7.ProcessListed || d7.ProcessUsed != 0 {
		t.Errorf("device 7: %+v: this process is not on it", d7)
	}
}

func TestProbeH200AndSampler(t *testing.T) {
	s := mockServer(dgxh200.New(), os.Getpid(), 5*gib)
	inv, err := ProbeWith(context.Background(), s, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	d := inv.Devices[0]
	if d.Name != "NVIDIA H200 141GB HBM3e" || d.Total != 144384<<20 {
		t.Fatalf("H200: %+v", d)
	}
	r := Resources{Kind: KindCUDA, GPU: d, GPUs: len(inv.Devices), Total: d.Total}
	if r.Budget, err = (Budget{Percent: 90}).Resolve(r.Total); err != nil || r.Budget != uint64(float64(d.Total)*0.9) {
		t.Fatalf("90%% of %d: %d, %v", d.Total, r.Budget, err)
	}
	if got := r.Summary(); got != "cuda:0/8 NVIDIA H200 141GB HBM3e 141 GiB" || len(got) > MaxSummaryLen {
		t.Errorf("summary %q", got)
	}
	sm, err := NewSampler(r, s)
	if err != nil {
		t.Fatal(err)
	}
	if used, err := sm.Used(); err != nil || used != 5*gib {
		t.Errorf("sampler: %d, %v; want NVML's per-process 5 GiB", used, err)
	}
	// Not listed (a container's PID namespace): device used minus what others
	// used when we started (1 GiB used, of which 5 GiB... is ours: clamp).
	dev := s.Devices[0].(*server.Device)
	dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	dev.MemoryInfo.Used = 9 * gib
	r.GPU.Used, r.GPU.ProcessUsed = 2*gib, 0
	sm2, err := NewSampler(r, s)
	if err != nil {
		t.Fatal(err)
	}
	if used, err := sm2.Used(); err != nil || used != 7*gib {
		t.Errorf("sampler without process list: %d, %v; want 9 - 2 GiB", used, err)
	}
	if err := sm.Close(); err != nil {
		t.Error(err)
	}
	if _, err := sm.Used(); err == nil {
		t.Error("Used after Close: want an error")
	}
	sm2.Close()
}

// A missing library must be reported after Init alone: any other call would
// crash the real binding.
func TestOpenWithoutDriverCallsOnlyInit(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_UNKNOWN} {
		calls := 0
		lib := &mock.Interface{InitFunc: func() nvml.Return { calls++; return ret }}
		// Every other mock func is nil: calling one panics, failing the test.
		_, err := ProbeWith(context.Background(), lib, 1)
		if !errors.Is(err, ErrNoDriver) || calls != 1 {
			t.Errorf("%v: err %v (want ErrNoDriver), %d Init calls", ret, err, calls)
		}
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND && !strings.Contains(err.Error(), "libnvidia-ml.so.1 not found") {
			t.Errorf("error %q should name the library", err)
		}
	}
}

// On this machine (CI has no GPU) the real NVML must fail cleanly, not crash.
func TestProbeRealLibrary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inv, err := Probe(ctx)
	if err != nil {
		if !errors.Is(err, ErrNoDriver) {
			t.Fatalf("Probe: %v", err)
		}
		t.Logf("no GPU: %v", err)
		return
	}
	t.Logf("GPUs: %+v", inv)
}

func TestProbeContextCancel(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	lib := &mock.Interface{InitFunc: func() nvml.Return { <-block; return nvml.ERROR_LIBRARY_NOT_FOUND }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ProbeWith(ctx, lib, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled probe: %v", err)
	}
}

// go-nvml resolves NVML symbols lazily; a binary linked with -z now would
// fail to start (or crash) without libnvidia-ml. Check the test binary.
func TestNoEagerBinding(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Skipf("not ELF: %v", err)
	}
	defer f.Close()
	for _, tag := range []elf.DynTag{elf.DT_FLAGS, elf.DT_FLAGS_1} {
		vals, err := f.DynValue(tag)
		if err != nil {
			continue
		}
		for _, v := range vals {
			if tag == elf.DT_FLAGS && v&uint64(elf.DF_BIND_NOW) != 0 || tag == elf.DT_FLAGS_1 && v&uint64(elf.DF_1_NOW) != 0 {
				t.Errorf("%s is linked with eager binding (%v = %#x): NVML's unresolved symbols must bind lazily", exe, tag, v)
			}
		}
	}
	if vals, _ := f.DynValue(elf.DT_BIND_NOW); len(vals) > 0 {
		t.Errorf("%s has DT_BIND_NOW", exe)
	}
}

func TestSummaryFits(t *testing.T) {
	long := Resources{Kind: KindCUDA, GPU: Device{Index: 3, Name: strings.Repeat("NVIDIA Ünïcode Super GPU ", 4)}, GPUs: 16, Total: 80 * gib}
	s := long.Summary()
	if len(s) > MaxSummaryLen || !strings.HasPrefix(s, "cuda:3/16 NVIDIA") || !strings.HasSuffix(s, " 80 GiB") {
		t.Errorf("summary %q (%d bytes)", s, len(s))
	}
	if !utf8Valid(s) {
		t.Errorf("summary %q cut inside a rune", s)
	}
	if got := (Resources{Kind: KindCPU, Total: 24 * gib}).Summary(); got != "cpu 24 GiB" {
		t.Errorf("cpu summary %q", got)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
