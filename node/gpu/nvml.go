package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the part of go-nvml's nvml.Interface that peertune calls. The real
// library (nvml.New()) satisfies it, and so do go-nvml's mock servers
// (pkg/nvml/mock/dgxh100 and friends), which is how the tests inject devices.
//
// Contract: no method but Init may be called before Init has returned
// nvml.SUCCESS. With the real library a call made after a failed Init jumps
// through an unresolved symbol and kills the process; Session enforces the
// order.
type NVML interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
}

// ErrNoDriver reports that NVML could not be used at all: the library is
// missing or the kernel driver is not loaded. Callers fall back to the CPU.
var ErrNoDriver = errors.New("no NVIDIA driver")

// Device is one GPU as NVML reports it. Byte counts are NVML's
// nvmlDeviceGetMemoryInfo figures (Used includes memory the driver reserves).
type Device struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
	Total uint64 `json:"total_bytes"`
	Free  uint64 `json:"free_bytes"`
	Used  uint64 `json:"used_bytes"`
	// ProcessUsed is the memory this process holds on the device, from
	// NVML's running-process list matched on our PID. ProcessListed is false
	// when the process is not in the list: it has no context on the device
	// yet, or it runs in a PID namespace (a container) whose PIDs NVML does
	// not see, or the query is not supported (MIG, some vGPUs).
	ProcessUsed   uint64 `json:"process_used_bytes"`
	ProcessListed bool   `json:"process_listed"`
}

// Inventory is the machine's GPUs. An empty Devices list means NVML works
// but sees no GPU.
type Inventory struct {
	Driver  string   `json:"driver"`
	Devices []Device `json:"devices"`
}

// Session is an initialised NVML: it exists only after Init succeeded, so
// every other NVML call goes through one. Its methods are safe for
// concurrent use; Close shuts NVML down and later calls return an error.
type Session struct {
	mu     sync.Mutex
	lib    NVML
	pid    int
	closed bool
}

// Open initialises NVML. lib nil means the system library, loaded lazily
// (dlopen of libnvidia-ml.so.1 at this call, never at process start; do not
// link peertune with eager binding, -Wl,-z,now). pid is the process whose
// per-process memory Device.ProcessUsed reports (os.Getpid()). A missing
// library or driver returns an error wrapping ErrNoDriver.
func Open(lib NVML, pid int) (*Session, error) {
	if lib == nil {
		lib = nvml.New()
	}
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		// Do not call ret.Error() or anything else on lib here: with the
		// library absent only Init is safe.
		return nil, fmt.Errorf("%w (libnvidia-ml.so.1 not found): install the NVIDIA driver to train on GPUs", ErrNoDriver)
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return nil, fmt.Errorf("%w (libnvidia-ml.so.1 is present but the kernel driver is not loaded)", ErrNoDriver)
	default:
		// The library is loaded (dlopen succeeded), so its error string is safe.
		return nil, fmt.Errorf("%w: nvmlInit failed: %s", ErrNoDriver, ret.Error())
	}
	return &Session{lib: lib, pid: pid}, nil
}

// Close shuts NVML down. It is safe to call twice.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		// A failed nvmlShutdown leaves the library loaded: Error is safe.
		return fmt.Errorf("nvmlShutdown: %s", ret.Error())
	}
	return nil
}

var errClosed = errors.New("gpu: NVML session is closed")

// Inventory lists every device with its memory.
func (s *Session) Inventory() (Inventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Inventory{}, errClosed
	}
	var inv Inventory
	drv, ret := s.lib.SystemGetDriverVersion()
	if ret == nvml.SUCCESS {
		inv.Driver = drv
	}
	n, ret := s.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("nvmlDeviceGetCount: %s", ret.Error())
	}
	for i := 0; i < n; i++ {
		d, err := s.device(i)
		if err != nil {
			return Inventory{}, err
		}
		inv.Devices = append(inv.Devices, d)
	}
	return inv, nil
}

// Device reads one device's figures (the guard's per-step sample).
func (s *Session) Device(index int) (Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Device{}, errClosed
	}
	return s.device(index)
}

func (s *Session) device(i int) (Device, error) {
	h, ret := s.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("GPU %d: nvmlDeviceGetHandleByIndex: %s", i, ret.Error())
	}
	d := Device{Index: i}
	if d.Name, ret = h.GetName(); ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("GPU %d: nvmlDeviceGetName: %s", i, ret.Error())
	}
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("GPU %d: nvmlDeviceGetUUID: %s", i, ret.Error())
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("GPU %d: nvmlDeviceGetMemoryInfo: %s", i, ret.Error())
	}
	d.Total, d.Free, d.Used = mem.Total, mem.Free, mem.Used
	// Not supported (MIG, vGPU) or no permission: the process figure is
	// unknown, which ProcessListed = false says; not an error.
	procs, ret := h.GetComputeRunningProcesses()
	if ret == nvml.SUCCESS {
		for _, p := range procs {
			if int(p.Pid) == s.pid {
				d.ProcessUsed += p.UsedGpuMemory
				d.ProcessListed = true
			}
		}
	}
	return d, nil
}

// Probe opens NVML, reads the inventory and closes it. Without an NVIDIA
// driver it returns an error wrapping ErrNoDriver, never a crash. NVML calls
// cannot be interrupted: when ctx ends first Probe returns ctx.Err() and the
// probe finishes (and shuts NVML down) in the background.
func Probe(ctx context.Context) (Inventory, error) {
	return ProbeWith(ctx, nil, os.Getpid())
}

// ProbeWith is Probe on a given NVML (nil: the system library), reporting
// pid's per-process memory.
func ProbeWith(ctx context.Context, lib NVML, pid int) (Inventory, error) {
	type result struct {
		inv Inventory
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := Open(lib, pid)
		if err != nil {
			ch <- result{err: err}
			return
		}
		inv, err := s.Inventory()
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		ch <- result{inv, err}
	}()
	select {
	case r := <-ch:
		return r.inv, r.err
	case <-ctx.Done():
		return Inventory{}, fmt.Errorf("probe GPUs: %w", ctx.Err())
	}
}
