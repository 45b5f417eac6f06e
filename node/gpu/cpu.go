package gpu

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// HostMemory is the host's memory as a CPU node budgets it.
type HostMemory struct {
	Physical  uint64 `json:"physical_bytes"`  // /proc/meminfo MemTotal
	Available uint64 `json:"available_bytes"` // /proc/meminfo MemAvailable
	// CgroupLimit is the smallest memory limit of this process's cgroup and
	// its ancestors (v2 memory.max, v1 memory.limit_in_bytes); 0 when there
	// is none.
	CgroupLimit uint64 `json:"cgroup_limit_bytes"`
	// Limit is what a budget is a share of: min(Physical, CgroupLimit).
	Limit uint64 `json:"limit_bytes"`
	// RSS and PeakRSS are this process's VmRSS and VmHWM.
	RSS     uint64 `json:"rss_bytes"`
	PeakRSS uint64 `json:"peak_rss_bytes"`
}

// CPUMemory reads /proc and /sys/fs/cgroup.
func CPUMemory() (HostMemory, error) { return readHostMemory(os.DirFS("/")) }

// readHostMemory reads the files under fsys, which stands for "/" (tests pass
// fixtures).
func readHostMemory(fsys fs.FS) (HostMemory, error) {
	var h HostMemory
	mi, err := readKB(fsys, "proc/meminfo", "MemTotal", "MemAvailable")
	if err != nil {
		return h, err
	}
	h.Physical, h.Available = mi[0], mi[1]
	h.CgroupLimit = cgroupLimit(fsys)
	h.Limit = h.Physical
	if h.CgroupLimit > 0 && h.CgroupLimit < h.Limit {
		h.Limit = h.CgroupLimit
	}
	st, err := readKB(fsys, "proc/self/status", "VmRSS", "VmHWM")
	if err != nil {
		return h, err
	}
	h.RSS, h.PeakRSS = st[0], st[1]
	return h, nil
}

// RSS returns this process's current and peak resident set size (VmRSS,
// VmHWM) in bytes.
func RSS() (cur, peak uint64, err error) {
	v, err := readKB(os.DirFS("/"), "proc/self/status", "VmRSS", "VmHWM")
	if err != nil {
		return 0, 0, err
	}
	return v[0], v[1], nil
}

// ResetPeakRSS sets VmHWM back to the current RSS (writes 5 to
// /proc/self/clear_refs, Linux ≥ 4.0), so that a later RSS() peak measures
// one phase.
func ResetPeakRSS() error {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	return nil
}

// ReleaseMemory runs a garbage collection and returns the freed pages to the
// operating system, so that RSS drops to what is live. Call it after loading
// weights (the host staging copy is garbage then) and after the guard lowers
// the micro-batch (the old activations are garbage then).
func ReleaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// readKB reads "Key:   123 kB" lines from a /proc file, in bytes, in the
// order of keys. Every key must be present.
func readKB(fsys fs.FS, name string, keys ...string) ([]uint64, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	out := make([]uint64, len(keys))
	found := make([]bool, len(keys))
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for i, want := range keys {
			if k != want {
				continue
			}
			f := strings.Fields(rest)
			if len(f) == 0 {
				return nil, fmt.Errorf("/%s: %s has no value", name, k)
			}
			v, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/%s: %s: %w", name, k, err)
			}
			mult := uint64(1)
			if len(f) > 1 && strings.EqualFold(f[1], "kB") {
				mult = 1024
			}
			out[i], found[i] = v*mult, true
		}
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("/%s: no %s line", name, keys[i])
		}
	}
	return out, nil
}

// cgroupLimit is the smallest memory limit on this process's cgroup path and
// its ancestors, under cgroup v2 (memory.max) and v1
// (memory/memory.limit_in_bytes). Directories that are not visible (a
// container sees its own cgroup as the root of the mount) are skipped. 0
// means unlimited or unknown.
func cgroupLimit(fsys fs.FS) uint64 {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		data = nil
	}
	v2, v1 := "/", "/"
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1 = parts[2]
			}
		}
	}
	var limit uint64
	take := func(v uint64) {
		if v > 0 && (limit == 0 || v < limit) {
			limit = v
		}
	}
	for _, dir := range ancestors("sys/fs/cgroup", v2) {
		if v, ok := readLimit(fsys, path.Join(dir, "memory.max")); ok {
			take(v)
		}
	}
	for _, dir := range ancestors("sys/fs/cgroup/memory", v1) {
		if v, ok := readLimit(fsys, path.Join(dir, "memory.limit_in_bytes")); ok {
			take(v)
		}
	}
	return limit
}

// ancestors lists root/p, its parents, ..., root.
func ancestors(root, p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	var out []string
	for {
		out = append(out, path.Join(root, p))
		if p == "" || p == "." {
			return out
		}
		p = path.Dir(p)
		if p == "." {
			p = ""
		}
	}
}

// unlimitedV1 is the smallest value cgroup v1 uses for "no limit": the
// kernel writes LONG_MAX rounded down to a page (9223372036854771712).
const unlimitedV1 = 1 << 62

// readLimit parses a memory.max / memory.limit_in_bytes file. "max" and v1's
// near-2^63 value mean no limit (ok, 0).
func readLimit(fsys fs.FS, name string) (uint64, bool) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, false // absent (not this cgroup version) or unreadable
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, true
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false
	}
	if v >= unlimitedV1 {
		return 0, true
	}
	return v, true
}

// LimitGoHeap sets the Go runtime's soft memory limit to the budget, less a
// reserve for memory the Go runtime does not manage (OpenBLAS's per-thread
// buffers, ≈ 32 MiB each), so that garbage — the per-tensor copies of
// loading, activations freed when the batch shape changes — is collected
// before the process's RSS passes the budget, instead of piling up to
// GOGC's twice-the-live-heap. It returns the previous limit. Live memory
// above the limit is not prevented (that is the planner's and the guard's
// job); the GC just runs more often then.
func LimitGoHeap(budget uint64) int64 {
	reserve := uint64(32<<20) * uint64(runtime.GOMAXPROCS(0))
	limit := int64(1 << 62)
	if budget > reserve {
		limit = int64(min(budget-reserve, 1<<62))
	}
	return debug.SetMemoryLimit(limit)
}
