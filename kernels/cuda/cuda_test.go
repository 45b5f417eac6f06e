package cuda

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/kerneltest"
)

// newTestBackend returns a Backend on GPU 0, closed at the end of the test,
// or skips the test with New's error (which names the missing library or
// GPU, where it was looked for and how to install it).
func newTestBackend(t *testing.T, tf32 bool) *Backend {
	t.Helper()
	be, err := New(Options{TF32: tf32})
	if err != nil {
		if IsNotAvailable(err) {
			t.Skipf("no usable CUDA here, skipping the GPU test: %v", err)
		}
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := be.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return be
}

// TestKernelsFP32 runs the suite every backend passes, with float32 GEMMs:
// the CPU backend's tolerances apply unchanged.
func TestKernelsFP32(t *testing.T) {
	t.Setenv(EnvTF32, "")
	newTestBackend(t, false) // skip early, with the reason, when there is no GPU
	kerneltest.Run(t, func(t *testing.T) kernels.Backend { return newTestBackend(t, false) })
}

// TestKernelsTF32 runs the suite with TF32 GEMMs (the default). TF32 rounds
// GEMM inputs to 10 mantissa bits (relative 2^-11 ≈ 5e-4 per product);
// kerneltest's Matmul tolerance 2e-5 is for float32, and its documentation
// gives TolScale ≈ 100 for TF32 backends. The other ops are float32 and
// pass at 1, so this run mostly re-checks them at a looser tolerance.
func TestKernelsTF32(t *testing.T) {
	t.Setenv(EnvTF32, "")
	newTestBackend(t, true)
	kerneltest.RunOptions(t, func(t *testing.T) kernels.Backend { return newTestBackend(t, true) },
		kerneltest.Options{TolScale: 100})
}

// TestKernelsGEMMAttentionGPU runs the suite with attention through
// batched GEMMs at every length (training lengths take that path; the
// suite's shapes are shorter than where auto switches), in IEEE float32
// and in TF32.
func TestKernelsGEMMAttentionGPU(t *testing.T) {
	for _, tf32 := range []bool{false, true} {
		t.Run(fmt.Sprintf("tf32=%v", tf32), func(t *testing.T) {
			t.Setenv(EnvTF32, "")
			t.Setenv(EnvAttention, "gemm")
			newTestBackend(t, tf32)
			scale := 1.0
			if tf32 {
				scale = 100
			}
			kerneltest.RunOptions(t, func(t *testing.T) kernels.Backend { return newTestBackend(t, tf32) },
				kerneltest.Options{TolScale: scale})
		})
	}
}

// TestNewWithoutCUDA: on a machine without a usable GPU (CI), New fails
// cleanly, says what is missing and how to get it, and Probe agrees.
func TestNewWithoutCUDA(t *testing.T) {
	p := Probe()
	if p.Usable {
		t.Skipf("a GPU is usable here (%s); this test is for machines without one", p.Reason)
	}
	be, err := New(DefaultOptions())
	if err == nil {
		be.Close()
		t.Fatalf("New succeeded although Probe says CUDA is not usable: %s", p.Reason)
	}
	if !IsNotAvailable(err) {
		t.Errorf("New's error %q: IsNotAvailable = false, want true (no GPU or library is not a GPU failure)", err)
	}
	if err.Error() != p.Reason {
		t.Errorf("Probe says %q, New says %q: want the same reason", p.Reason, err)
	}
	msg := err.Error()
	switch {
	case p.Driver == "":
		// No driver: the message names libcuda.so.1 and how to install it.
		for _, want := range []string{"libcuda.so.1", "NVIDIA driver", EnvDriverLib} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
	case p.NVRTC == "" || p.Cublas == "":
		if !strings.Contains(msg, "pip install") {
			t.Errorf("error %q does not say how to install the missing library", msg)
		}
	}
	t.Logf("CUDA not usable here, as expected: %s", msg)
}

// TestLibraryNotFoundMessage: a library that is nowhere gives an error with
// every candidate, the directories searched and the install hint.
func TestLibraryNotFoundMessage(t *testing.T) {
	spec := libSpec{what: "Frobnicator (libfrob)", env: "PEERTUNE_TEST_LIBFROB", hint: "pip install frob",
		sonames: []string{"libfrob.so.9"}, pipDirs: []string{"nvidia/frob/lib"}, toolkit: true}
	_, err := spec.open()
	if err == nil {
		t.Fatal("open of a missing library succeeded")
	}
	for _, want := range []string{"Frobnicator", "libfrob.so.9", "/usr/local/cuda", "pip install frob"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Setenv("PEERTUNE_TEST_LIBFROB", "/nonexistent/libfrob.so.9")
	names, explicit := spec.candidates()
	if !explicit || len(names) != 1 || names[0] != "/nonexistent/libfrob.so.9" {
		t.Errorf("with the env override: candidates %v, explicit %v; want only the override", names, explicit)
	}
	_, err = spec.open()
	if err == nil || !strings.Contains(err.Error(), "PEERTUNE_TEST_LIBFROB=/nonexistent/libfrob.so.9") {
		t.Errorf("explicit library that does not load: error %v, want it to name the variable and path", err)
	}
}

// TestLibraryOrderFollowsDriver: libraries of the driver's CUDA major come
// first, newer majors are never tried; an unknown driver (compile-only use)
// prefers the newest.
func TestLibraryOrderFollowsDriver(t *testing.T) {
	for _, c := range []struct {
		driver int
		want   string
	}{
		{0, "libnvrtc.so.13 libnvrtc.so.12 libnvrtc.so"},
		{12040, "libnvrtc.so.12 libnvrtc.so"},
		{13020, "libnvrtc.so.13 libnvrtc.so.12 libnvrtc.so"},
		{14000, "libnvrtc.so.13 libnvrtc.so.12 libnvrtc.so"},
	} {
		if got := strings.Join(nvrtcSpec(c.driver).sonames, " "); got != c.want {
			t.Errorf("driver %d: NVRTC sonames %q, want %q", c.driver, got, c.want)
		}
	}
	for _, c := range []struct {
		name       string
		lib, drv   int
		wantRefuse bool
	}{
		{"13 on a 12.4 driver", 13, 12040, true},
		{"12 on a 13.0 driver", 12, 13000, false},
		{"12 on 12.8", 12, 12080, false},
		{"unknown library version", 0, 12040, false},
		{"unknown driver", 13, 0, false},
	} {
		if got := newerThanDriver("NVRTC", c.lib, c.drv) != ""; got != c.wantRefuse {
			t.Errorf("%s: refused %v, want %v", c.name, got, c.wantRefuse)
		}
	}
	for name, want := range map[string]int{"libcublas.so.12": 12, "/x/nvidia/cu13/lib/libcublas.so.13": 13, "libcublas.so": 0, "libcublas.so.12.8.4": 12, "libfoo.so.x": 0} {
		if got := sonameMajor(name); got != want {
			t.Errorf("sonameMajor(%q) = %d, want %d", name, got, want)
		}
	}
}

// TestLibraryCandidatesVersionFirst: with both pip wheel sets installed, a
// CUDA 12 driver gets pip's CUDA 12 library, never the CUDA 13 one in
// nvidia/cu13/lib (which would not run on it); an unknown driver tries 13
// first, in every place, before any 12.
func TestLibraryCandidatesVersionFirst(t *testing.T) {
	root := t.TempDir()
	sp := root + "/lib/python3.99/site-packages"
	for _, f := range []string{"/nvidia/cu13/lib/libnvrtc.so.13", "/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"} {
		if err := os.MkdirAll(filepath.Dir(sp+f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sp+f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("VIRTUAL_ENV", root)
	t.Setenv(EnvNVRTCLib, "")
	pos := func(names []string, suffix string) int {
		for i, n := range names {
			if strings.HasSuffix(n, suffix) {
				return i
			}
		}
		return -1
	}
	names, _ := nvrtcSpec(12040).candidates()
	if pos(names, "cu13/lib/libnvrtc.so.13") >= 0 || pos(names, "cuda_nvrtc/lib/libnvrtc.so.12") < 0 {
		t.Errorf("driver 12.4: candidates %v; want pip's libnvrtc.so.12 and no .so.13", names)
	}
	names, _ = nvrtcSpec(0).candidates()
	if p13, p12 := pos(names, "cu13/lib/libnvrtc.so.13"), pos(names, "libnvrtc.so.12"); p13 < 0 || p12 < 0 || p13 > p12 {
		t.Errorf("unknown driver: candidates %v; want every .so.13 before any .so.12", names)
	}
	if names[len(names)-1] != "libnvrtc.so" {
		t.Errorf("the unversioned soname (any version) must come last: %v", names)
	}
}

// TestSitePackagesDiscovery finds pip's NVIDIA wheels in a virtualenv.
func TestSitePackagesDiscovery(t *testing.T) {
	root := t.TempDir()
	sp := root + "/lib/python3.99/site-packages"
	if err := os.MkdirAll(sp+"/nvidia/cuda_nvrtc/lib", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sp+"/nvidia/cuda_nvrtc/lib/libnvrtc.so.12", []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIRTUAL_ENV", root)
	t.Setenv(EnvNVRTCLib, "")
	found := false
	for _, d := range sitePackagesDirs() {
		if d == sp {
			found = true
		}
	}
	if !found {
		t.Fatalf("sitePackagesDirs() = %v, want it to include %s", sitePackagesDirs(), sp)
	}
	names, _ := nvrtcSpec(12000).candidates()
	want := sp + "/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
	found = false
	for _, n := range names {
		if n == want {
			found = true
		}
	}
	if !found {
		t.Errorf("NVRTC candidates %v do not include %s", names, want)
	}
}

// TestBF16Rounding checks the host conversion used by CopyIn/CopyOut of
// bf16 buffers (round to nearest, ties to even; NaN stays NaN).
func TestBF16Rounding(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above the tie
		{0x7f7fffff, 0x7f80}, // max float rounds to +inf
		{0xff800000, 0xff80}, // -inf
		{0x7fc00001, 0x7fc0}, // NaN
		{0x7f800001, 0x7fc0}, // signalling NaN becomes quiet, not inf
	} {
		got := bf16FromF32(f32(c.in))
		if got != c.want {
			t.Errorf("bf16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if f32FromBF16(0x3fc0) != 1.5 {
		t.Errorf("f32(0x3fc0) = %v, want 1.5", f32FromBF16(0x3fc0))
	}
}

func f32(bits uint32) float32 { return math.Float32frombits(bits) }

// TestProbeReport logs what Probe finds (scripts/gpu-check.sh prints it).
func TestProbeReport(t *testing.T) {
	p := Probe()
	t.Logf("usable=%v: %s", p.Usable, p.Reason)
	if p.Usable && len(p.Devices) == 0 {
		t.Error("Probe: usable with no devices")
	}
}

// EnvGPUBench enables TestGemmThroughput (a measurement, not a check: it
// never fails on speed).
const EnvGPUBench = "PEERTUNE_GPU_BENCH"

// TestGemmThroughput logs GEMM TFLOP/s on GPU 0 for the projections of a
// ~1B-parameter Llama (hidden 2048, MLP 8192, as Llama 3.2 1B) on 4096
// tokens, in bf16, TF32 and float32. Set PEERTUNE_GPU_BENCH=1.
func TestGemmThroughput(t *testing.T) {
	if os.Getenv(EnvGPUBench) != "1" {
		t.Skipf("set %s=1 to measure GEMM throughput", EnvGPUBench)
	}
	t.Setenv(EnvTF32, "")
	shapes := []struct {
		name    string
		m, n, k int
	}{
		{"qkvo 4096x2048x2048", 4096, 2048, 2048},
		{"mlp-up 4096x8192x2048", 4096, 8192, 2048},
		{"mlp-down 4096x2048x8192", 4096, 2048, 8192},
	}
	for _, mode := range []struct {
		name string
		dt   kernels.DType
		tf32 bool
	}{{"bf16", kernels.BF16, false}, {"tf32", kernels.F32, true}, {"fp32", kernels.F32, false}} {
		be := newTestBackend(t, mode.tf32)
		for _, s := range shapes {
			iters := 50
			if mode.name == "fp32" {
				iters = 10
			}
			tf, err := GemmTFLOPS(be, s.m, s.n, s.k, mode.dt, iters)
			if err != nil {
				t.Fatalf("%s %s: %v", mode.name, s.name, err)
			}
			// One parseable line per measurement for scripts/gpu-check.sh.
			t.Logf("GEMM %s %s: %.1f TFLOP/s", mode.name, s.name, tf)
		}
	}
}

// TestCublasLoadsWithoutGPU resolves every cuBLAS symbol we call from the
// library our search finds (pip's wheels here), and calls one of them
// (cublasGetStatusString, which needs no GPU) through its trampoline.
func TestCublasLoadsWithoutGPU(t *testing.T) {
	lib, err := cublasSpec(0).open()
	if err != nil {
		t.Skipf("cuBLAS not found: %v", err)
	}
	api, err := loadCublas(lib)
	if err != nil {
		t.Fatal(err)
	}
	if api.getStatusString == nil {
		t.Skipf("%s has no cublasGetStatusString", lib.Name())
	}
	err = api.statusError("cublasSgemm_v2", 7)
	if err == nil || !strings.Contains(err.Error(), "CUBLAS_STATUS_INVALID_VALUE") {
		t.Errorf("status 7 from %s: %v, want CUBLAS_STATUS_INVALID_VALUE", lib.Name(), err)
	}
	if err := api.statusError("x", 0); err != nil {
		t.Errorf("status 0: %v", err)
	}
	t.Logf("%s: every symbol resolved; status 7 reads %q", lib.Name(), err)
}
