package gpu

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"
)

const meminfo = `MemTotal:       24684084 kB
MemFree:        20657024 kB
MemAvailable:   24048472 kB
Buffers:          123456 kB
`

const status = `Name:	peertune
VmPeak:	 3060 kB
VmHWM:	    2048 kB
VmRSS:	    1732 kB
Threads:	1
`

func hostFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{
		"proc/meminfo":     {Data: []byte(meminfo)},
		"proc/self/status": {Data: []byte(status)},
	}
	for k, v := range files {
		fsys[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return fsys
}

func TestHostMemoryCgroups(t *testing.T) {
	const phys = 24684084 << 10
	for _, tc := range []struct {
		name  string
		files map[string]string
		limit uint64
	}{
		{"no cgroup files", nil, 0},
		{"v2 root max", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "max\n"}, 0},
		{"v2 own cgroup", map[string]string{
			"proc/self/cgroup":                          "0::/kubepods/pod1/c1\n",
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "8589934592\n",
			"sys/fs/cgroup/kubepods/memory.max":         "max\n"}, 8 << 30},
		{"v2 parent is tighter", map[string]string{
			"proc/self/cgroup":                          "0::/kubepods/pod1/c1\n",
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":    "4294967296\n"}, 4 << 30},
		{"v2 namespaced: only the mount root is visible", map[string]string{
			"proc/self/cgroup":         "0::/system.slice/job.scope\n",
			"sys/fs/cgroup/memory.max": "2147483648\n"}, 2 << 30},
		{"v1 unlimited", map[string]string{
			"proc/self/cgroup":                           "4:memory:/process_api/61c2\n1:cpu:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"v1 limited, co-mounted controllers", map[string]string{
			"proc/self/cgroup": "5:cpuacct,memory:/docker/abc\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824\n"}, 1 << 30},
		{"limit above physical memory", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "107374182400\n"}, 100 << 30},
		{"garbage is ignored", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "lots\n"}, 0},
	} {
		h, err := readHostMemory(hostFS(tc.files))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		wantLimit := uint64(phys)
		if tc.limit > 0 && tc.limit < wantLimit {
			wantLimit = tc.limit
		}
		if h.CgroupLimit != tc.limit || h.Limit != wantLimit || h.Physical != phys || h.Available != 24048472<<10 {
			t.Errorf("%s: %+v; want cgroup limit %d", tc.name, h, tc.limit)
		}
		if h.RSS != 1732<<10 || h.PeakRSS != 2048<<10 {
			t.Errorf("%s: RSS %d peak %d", tc.name, h.RSS, h.PeakRSS)
		}
	}
	if _, err := readHostMemory(fstest.MapFS{"proc/meminfo": {Data: []byte("MemTotal: 1 kB\n")}}); err == nil || !strings.Contains(err.Error(), "MemAvailable") {
		t.Errorf("missing key: %v", err)
	}
}

func TestHostMemoryLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	h, err := CPUMemory()
	if err != nil {
		t.Fatal(err)
	}
	if h.Physical == 0 || h.Limit == 0 || h.Limit > h.Physical || h.RSS == 0 || h.PeakRSS < h.RSS {
		t.Errorf("%+v", h)
	}
	// The peak follows a big touched allocation and resets to the current RSS.
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	_, peak1, err := RSS()
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(buf)
	buf = nil
	ReleaseMemory()
	if err := ResetPeakRSS(); err != nil {
		t.Skipf("clear_refs not writable: %v", err)
	}
	cur, peak2, err := RSS()
	if err != nil {
		t.Fatal(err)
	}
	if peak1 < 64<<20 || peak2 >= peak1-32<<20 || peak2 < cur-cur/10 {
		t.Errorf("peak before %d, after reset %d (current %d)", peak1, peak2, cur)
	}
	r := Resources{Kind: KindCPU, Host: h, Total: h.Limit}
	s, err := NewSampler(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if used, err := s.Used(); err != nil || used == 0 {
		t.Errorf("rss sampler: %d, %v", used, err)
	}
}

func TestLimitGoHeap(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	LimitGoHeap(8 << 30)
	want := int64(8<<30) - int64(32<<20)*int64(runtime.GOMAXPROCS(0))
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("limit %d, want %d", got, want)
	}
}

func TestParseBudget(t *testing.T) {
	for in, want := range map[string]Budget{
		"90%":      {Percent: 90},
		" 12.5 % ": {Percent: 12.5},
		"100%":     {Percent: 100},
		"20GiB":    {Bytes: 20 << 30},
		"20gib":    {Bytes: 20 << 30},
		"20Gi":     {Bytes: 20 << 30},
		"512MiB":   {Bytes: 512 << 20},
		"1.5TB":    {Bytes: 1_500_000_000_000},
		"1.5TiB":   {Bytes: 3 << 39},
		"20G":      {Bytes: 20e9},
		"20 GB":    {Bytes: 20e9},
		"4096":     {Bytes: 4096},
		"64KiB":    {Bytes: 64 << 10},
		"8B":       {Bytes: 8},
	} {
		got, err := ParseBudget(in)
		if err != nil || got != want {
			t.Errorf("ParseBudget(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"":       "empty",
		"0%":     "(0, 100]",
		"101%":   "(0, 100]",
		"-5GiB":  "positive",
		"0":      "positive",
		"20XB":   "unknown unit",
		"GiB":    "not a number",
		"abc%":   "not a number",
		"1e30TB": "too large",
		"NaN%":   "not a number",
		"0.1B":   "less than one byte",
	} {
		_, err := ParseBudget(in)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseBudget(%q): error %v, want one saying %q", in, err, why)
		}
	}
	if got, err := (Budget{Percent: 50}).Resolve(10 << 30); err != nil || got != 5<<30 {
		t.Errorf("50%% of 10 GiB: %d, %v", got, err)
	}
	if _, err := (Budget{Bytes: 20 << 30}).Resolve(16 << 30); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("20 GiB of 16: %v", err)
	}
	for _, s := range []string{"90%", "20GiB", "1.5TB"} {
		b, _ := ParseBudget(s)
		back, err := ParseBudget(b.String())
		if err != nil || back != b {
			t.Errorf("%q → %q → %+v, %v", s, b.String(), back, err)
		}
	}
}
