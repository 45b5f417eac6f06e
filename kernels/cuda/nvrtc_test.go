package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/peertune/peertune/internal/dl"
)

// nvrtcLibsForTest opens every distinct NVRTC it can find (by major.minor
// version): the env override alone when set, else each candidate of
// nvrtcSpec. It skips the test, saying where it looked and how to install
// one, when there is none.
func nvrtcLibsForTest(t *testing.T) []*nvrtcAPI {
	t.Helper()
	spec := nvrtcSpec(0)
	names, explicit := spec.candidates()
	var out []*nvrtcAPI
	var tried []string
	seen := map[string]bool{}
	for _, name := range names {
		lib, err := dl.Open(name)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		nv, err := loadNVRTC(lib)
		if err != nil {
			t.Fatalf("%s loads but is not a usable NVRTC: %v", name, err)
		}
		if seen[nv.versionString()] {
			continue
		}
		seen[nv.versionString()] = true
		out = append(out, nv)
	}
	if len(out) == 0 && explicit {
		t.Fatalf("%s=%s does not load: %s", EnvNVRTCLib, names[0], strings.Join(tried, "; "))
	}
	if len(out) == 0 {
		t.Skipf("NVRTC not found, so the embedded CUDA kernels cannot be compile-checked here.\n"+
			"Searched for %v in: %s.\nTried: %s\nTo run this test: %s",
			spec.sonames, spec.searchedDirs(), strings.Join(tried, "; "), hintNVRTC)
	}
	return out
}

// TestNVRTCCompileAllKernels compiles every embedded module for sm_80 (A100)
// and sm_90 (H100/H200) with every NVRTC found, through the same compiler
// the Backend uses, and fails on any error or warning: the kernels must
// build cleanly without a GPU or a driver, in CI.
func TestNVRTCCompileAllKernels(t *testing.T) {
	sigs, err := allKernels()
	if err != nil {
		t.Fatal(err)
	}
	for _, nv := range nvrtcLibsForTest(t) {
		t.Run("nvrtc"+nv.versionString(), func(t *testing.T) {
			t.Logf("%s: NVRTC %s, architectures %v", nv.lib.Name(), nv.versionString(), nv.archs)
			c := newCompiler(nv, "") // no disk cache: really compile
			for _, arch := range []int{80, 90} {
				if !nv.supports(arch) {
					t.Errorf("NVRTC %s does not list sm_%d among its architectures %v", nv.versionString(), arch, nv.archs)
					continue
				}
				for _, m := range moduleNames {
					t.Run(fmt.Sprintf("sm_%d/%s", arch, m), func(t *testing.T) {
						img, err := c.image(m, arch)
						if err != nil {
							t.Fatal(err)
						}
						if img.ptx || img.target != fmt.Sprintf("sm_%d", arch) {
							t.Fatalf("target %s (ptx %v), want a cubin for sm_%d", img.target, img.ptx, arch)
						}
						if img.log != "" {
							t.Errorf("NVRTC %s, %s.cu for sm_%d: the compile log is not empty (warnings are errors here):\n%s",
								nv.versionString(), m, arch, img.log)
						}
						// A cubin is an ELF file; its kernels are named in its symbol table.
						if !strings.HasPrefix(string(img.image), "\x7fELF") {
							t.Fatalf("image of %d bytes is not an ELF cubin", len(img.image))
						}
						for _, s := range sigs {
							if s.module == m && !strings.Contains(string(img.image), s.name+"\x00") {
								t.Errorf("cubin of %s has no symbol %s", m, s.name)
							}
						}
					})
				}
			}
		})
	}
}

// TestNVRTCCubinCache: a second compile is a disk hit, a corrupt entry is
// recompiled and rewritten, and the key changes with the architecture.
func TestNVRTCCubinCache(t *testing.T) {
	nv := nvrtcLibsForTest(t)[0]
	dir := t.TempDir()
	c := newCompiler(nv, dir)
	img, err := c.image("swiglu", 80)
	if err != nil {
		t.Fatal(err)
	}
	if img.hit || img.cached == "" {
		t.Fatalf("first compile: hit %v, cached %q; want a fresh compile written to the cache", img.hit, img.cached)
	}
	if filepath.Dir(img.cached) != dir {
		t.Errorf("cache file %s is not in %s", img.cached, dir)
	}
	// A new compiler (a new process) finds it on disk.
	img2, err := newCompiler(nv, dir).image("swiglu", 80)
	if err != nil {
		t.Fatal(err)
	}
	if !img2.hit || string(img2.image) != string(img.image) {
		t.Fatalf("second compiler: hit %v, same image %v; want a disk hit with the same bytes", img2.hit, string(img2.image) == string(img.image))
	}
	// Corrupt the entry: flip a payload byte. It must be recompiled.
	data, err := os.ReadFile(img.cached)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-10] ^= 0xff
	if err := os.WriteFile(img.cached, data, 0o644); err != nil {
		t.Fatal(err)
	}
	img3, err := newCompiler(nv, dir).image("swiglu", 80)
	if err != nil {
		t.Fatal(err)
	}
	if img3.hit || string(img3.image) != string(img.image) {
		t.Fatalf("after corruption: hit %v; want a recompile giving the original image", img3.hit)
	}
	if _, err := readCacheFile(img.cached); err != nil {
		t.Errorf("the recompiled entry was not rewritten: %v", err)
	}
	// Truncated to its header: also corrupt.
	if err := os.WriteFile(img.cached, []byte(cacheMagic), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readCacheFile(img.cached); err == nil {
		t.Error("a header-only cache file reads as valid")
	}
	// Another architecture is another entry.
	if _, err := newCompiler(nv, dir).image("swiglu", 90); err != nil {
		t.Fatal(err)
	}
	files, err := cacheEntries(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Errorf("cache holds %v, want one entry per architecture", files)
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left in the cache", e.Name())
		}
	}
}

// TestNVRTCTargetForNewerGPU: a GPU newer than NVRTC knows gets PTX for the
// newest architecture NVRTC has (the driver JIT-compiles it).
func TestNVRTCTargetForNewerGPU(t *testing.T) {
	nv := nvrtcLibsForTest(t)[0]
	c := newCompiler(nv, "")
	newest := slices.Max(nv.archs)
	got, err := c.target(newest + 10)
	if err != nil || got != fmt.Sprintf("compute_%d", newest) {
		t.Errorf("target(sm_%d) = %q, %v; want compute_%d", newest+10, got, err, newest)
	}
	if _, err := c.target(10); err == nil {
		t.Error("target(sm_10): want an error (older than any supported architecture)")
	}
	// A GPU between two architectures NVRTC lists gets PTX for the one
	// below it (the driver compiles PTX for any later compute capability).
	for i := 1; i < len(nv.archs); i++ {
		lo, hi := nv.archs[i-1], nv.archs[i]
		if hi-lo < 2 {
			continue
		}
		got, err := c.target(lo + 1)
		if err != nil || got != fmt.Sprintf("compute_%d", lo) {
			t.Errorf("target(sm_%d), between %d and %d: %q, %v; want compute_%d", lo+1, lo, hi, got, err, lo)
		}
		break
	}
	img, err := c.image("dropout", newest+10)
	if err != nil {
		t.Fatal(err)
	}
	if !img.ptx || !strings.Contains(string(img.image), ".entry pt_dropout") || img.image[len(img.image)-1] != 0 {
		t.Errorf("PTX image: ptx %v, want NUL-terminated PTX text with .entry pt_dropout", img.ptx)
	}
}

// TestNVRTCReportsWarnings makes sure the clean-log check above can fail: a
// source with a front-end warning (an unused variable) and one that needs
// local memory (a large dynamically indexed array, which ptxas reports
// through --warn-on-local-memory-usage) both leave text in the log.
func TestNVRTCReportsWarnings(t *testing.T) {
	for _, nv := range nvrtcLibsForTest(t) {
		for name, src := range map[string]string{
			"unused": `extern "C" __global__ void k(float *x) { int unused = 3; x[0] = 1.0f; }`,
			"local":  `extern "C" __global__ void k(float *x, int i) { float a[512]; for (int j = 0; j < 512; j++) a[(j*i)&511] = x[j]; x[0] = a[(i*7)&511]; }`,
		} {
			res, err := nv.compile(name+".cu", src, nil, "sm_80", nvrtcOptions)
			if err != nil {
				t.Fatalf("NVRTC %s, %s: %v", nv.versionString(), name, err)
			}
			if res.log == "" || !strings.Contains(strings.ToLower(res.log), "warning") {
				t.Errorf("NVRTC %s, %s: log %q, want a warning", nv.versionString(), name, res.log)
			}
		}
	}
}
