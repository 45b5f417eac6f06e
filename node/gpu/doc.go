// Package gpu is a node's device inventory and memory budget: NVIDIA GPUs
// through NVML (github.com/NVIDIA/go-nvml), and the host's memory (cgroup
// limit, physical memory, this process's RSS) for CPU nodes.
//
// NVML is loaded lazily: libnvidia-ml.so.1 is dlopened by the first Init,
// never at process start, so one binary runs on machines with and without
// the NVIDIA driver. After a failed Init any other NVML call would jump
// through an unresolved symbol and kill the process, so every call goes
// through a Session, which only Open creates, after Init succeeded. The
// binary must not be linked with eager binding (-Wl,-z,now); a test checks
// the test binary's ELF flags.
//
// Typical use, once per node before training:
//
//	b, err := gpu.ParseBudget(flagMemBudget) // "90%", "20GiB", "1.5TB"
//	res, err := gpu.Detect(ctx, nil, deviceIndex, b) // deviceIndex -1: the CPU
//	meta.Device, meta.Budget = res.Summary(), res.Budget
//	if res.Kind == gpu.KindCPU {
//		gpu.LimitGoHeap(res.Budget) // the GC collects before RSS passes the budget
//	}
//	s, err := gpu.NewSampler(res, nil) // per step: s.Used()
//
// Probe(ctx) alone lists the GPUs; without a driver it returns an error
// wrapping ErrNoDriver ("no NVIDIA driver (libnvidia-ml.so.1 not found)").
package gpu
