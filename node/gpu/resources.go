package gpu

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Kind is where a node trains.
type Kind string

// Kinds of node.
const (
	KindCPU  Kind = "cpu"
	KindCUDA Kind = "cuda"
)

// MaxSummaryLen matches node.MaxDeviceLen: the summary travels in gossip
// metadata.
const MaxSummaryLen = 64

// Resources are what one node trains with: its device and the budget it
// keeps within. The lead gossips Summary() as node.Meta.Device and Budget as
// node.Meta.Budget.
type Resources struct {
	Kind Kind `json:"kind"`
	// GPU is the device this rank uses (Kind == KindCUDA).
	GPU Device `json:"gpu,omitempty"`
	// GPUs is how many devices the machine has (for the summary).
	GPUs int        `json:"gpus,omitempty"`
	Host HostMemory `json:"host"`
	// Total is the memory the budget is a share of: the GPU's total, or on
	// the CPU min(physical, cgroup limit).
	Total uint64 `json:"total_bytes"`
	// Budget is the resolved --mem-budget in bytes.
	Budget uint64 `json:"budget_bytes"`
	// BudgetSpec is the flag as given ("90%").
	BudgetSpec string `json:"budget"`
}

// Detect resolves the node's device and budget. device < 0 means the CPU;
// otherwise the GPU with that index, probed through lib (nil: the system
// NVML). A missing driver with device >= 0 is an error wrapping ErrNoDriver
// (callers that want "GPU if present" probe first and pass -1 on
// ErrNoDriver).
func Detect(ctx context.Context, lib NVML, device int, budget Budget) (Resources, error) {
	host, err := CPUMemory()
	if err != nil {
		return Resources{}, err
	}
	r := Resources{Kind: KindCPU, Host: host, Total: host.Limit, BudgetSpec: budget.String()}
	if device >= 0 {
		inv, err := ProbeWith(ctx, lib, os.Getpid())
		if err != nil {
			return Resources{}, err
		}
		if device >= len(inv.Devices) {
			return Resources{}, fmt.Errorf("GPU %d: this machine has %d GPU(s)", device, len(inv.Devices))
		}
		r.Kind, r.GPU, r.GPUs, r.Total = KindCUDA, inv.Devices[device], len(inv.Devices), inv.Devices[device].Total
	}
	if r.Budget, err = budget.Resolve(r.Total); err != nil {
		return Resources{}, fmt.Errorf("--mem-budget on %s: %w", r.where(), err)
	}
	return r, nil
}

func (r Resources) where() string {
	if r.Kind == KindCUDA {
		return fmt.Sprintf("GPU %d (%s, %s)", r.GPU.Index, r.GPU.Name, FormatBytes(r.Total))
	}
	return "the CPU (" + FormatBytes(r.Total) + ")"
}

// Summary is a one-line description of the device, at most MaxSummaryLen
// bytes: "cpu 23.5 GiB" or "cuda:0/8 NVIDIA H100 80GB HBM3 80 GiB". The
// device name is shortened when the whole would not fit.
func (r Resources) Summary() string {
	mem := FormatBytes(r.Total)
	if r.Kind != KindCUDA {
		return fitSummary("cpu", mem)
	}
	prefix := "cuda:" + strconv.Itoa(r.GPU.Index)
	if r.GPUs > 1 {
		prefix += "/" + strconv.Itoa(r.GPUs)
	}
	name := strings.Join(strings.Fields(r.GPU.Name), " ")
	return fitSummary(prefix+" "+name, mem)
}

// fitSummary joins head and tail, cutting head (at a character boundary) so
// that the result fits MaxSummaryLen.
func fitSummary(head, tail string) string {
	room := MaxSummaryLen - len(tail) - 1
	if len(head) > room {
		head = head[:room]
		for len(head) > 0 && !validUTF8End(head) {
			head = head[:len(head)-1]
		}
		head = strings.TrimRight(head, " ")
	}
	return head + " " + tail
}

func validUTF8End(s string) bool {
	// A string is cut inside a rune when its last byte is a leading or
	// continuation byte of an incomplete sequence.
	for i := len(s) - 1; i >= 0 && i >= len(s)-4; i-- {
		c := s[i]
		if c < 0x80 {
			return i == len(s)-1
		}
		if c >= 0xC0 { // leading byte: how long is the sequence?
			n := 2
			if c >= 0xE0 {
				n = 3
			}
			if c >= 0xF0 {
				n = 4
			}
			return len(s)-i == n
		}
	}
	return false
}

// Sampler reads this process's current memory use, what the guard compares
// with the budget after each step.
type Sampler interface {
	// Used is the bytes this process holds now.
	Used() (uint64, error)
	Close() error
}

// NewSampler returns the sampler for r: VmRSS on the CPU; on a GPU NVML's
// per-process figure, or (when NVML does not list this process, e.g. in a
// container with its own PID namespace) the device's used memory minus what
// was used before the process started (r.GPU.Used at Detect). lib nil means
// the system NVML.
func NewSampler(r Resources, lib NVML) (Sampler, error) {
	if r.Kind != KindCUDA {
		return rssSampler{}, nil
	}
	s, err := Open(lib, os.Getpid())
	if err != nil {
		return nil, err
	}
	return &gpuSampler{s: s, index: r.GPU.Index, before: r.GPU.Used - min(r.GPU.Used, r.GPU.ProcessUsed)}, nil
}

type rssSampler struct{}

func (rssSampler) Used() (uint64, error) {
	cur, _, err := RSS()
	return cur, err
}

func (rssSampler) Close() error { return nil }

type gpuSampler struct {
	s      *Session
	index  int
	before uint64 // device memory used by others when we started
}

func (g *gpuSampler) Used() (uint64, error) {
	d, err := g.s.Device(g.index)
	if err != nil {
		return 0, err
	}
	if d.ProcessListed {
		return d.ProcessUsed, nil
	}
	if d.Used < g.before {
		return 0, nil
	}
	return d.Used - g.before, nil
}

func (g *gpuSampler) Close() error { return g.s.Close() }
