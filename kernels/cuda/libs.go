package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/peertune/peertune/internal/dl"
)

// Environment variables that name a library explicitly (a path or a
// soname). An explicit library that does not load is an error, never a
// silent fallback to another one.
const (
	EnvDriverLib = "PEERTUNE_LIBCUDA"   // the CUDA driver, default libcuda.so.1
	EnvNVRTCLib  = "PEERTUNE_LIBNVRTC"  // NVRTC, default libnvrtc.so.13 / .so.12 (see nvrtcCandidates)
	EnvCublasLib = "PEERTUNE_LIBCUBLAS" // cuBLAS, default libcublas.so.13 / .so.12
)

// Install hints, part of every "not found" error.
const (
	hintDriver = "install the NVIDIA driver (it provides libcuda.so.1), or set " + EnvDriverLib + "=/path/to/libcuda.so.1"
	hintNVRTC  = "pip install nvidia-cuda-nvrtc-cu12 (CUDA 12 driver) or nvidia-cuda-nvrtc (CUDA 13 driver), or the CUDA toolkit, or set " + EnvNVRTCLib + "=/path/to/libnvrtc.so.12"
	hintCublas = "pip install nvidia-cublas-cu12 (CUDA 12 driver) or nvidia-cublas (CUDA 13 driver), or the CUDA toolkit, or set " + EnvCublasLib + "=/path/to/libcublas.so.12"
)

// libSpec says how to find one library.
type libSpec struct {
	what    string   // "CUDA driver", "NVRTC", "cuBLAS"
	env     string   // explicit override
	hint    string   // how to install it
	sonames []string // in order of preference, searched the dynamic loader's way
	// pipDirs are directories under Python's site-packages where NVIDIA's
	// pip wheels put the library (nvidia-*-cu12: nvidia/<component>/lib;
	// the CUDA 13 wheels: nvidia/cu13/lib).
	pipDirs []string
	// toolkit reports whether CUDA toolkit directories are searched
	// (the driver is not in the toolkit).
	toolkit bool
}

// candidates lists every name Open should try, in order: the env override
// alone when set; else soname by soname (the preferred CUDA major first),
// the soname as the dynamic loader finds it (LD_LIBRARY_PATH, ld.so.cache,
// the default directories), then in the CUDA toolkit's library directories
// and in pip's NVIDIA wheels under every Python site-packages directory
// that exists. Version before place: a library of the driver's major in
// pip's CUDA 12 folder beats a newer one in the CUDA 13 folder.
func (s libSpec) candidates() (names []string, explicit bool) {
	if p := os.Getenv(s.env); p != "" {
		return []string{p}, true
	}
	var dirs []string
	if s.toolkit {
		dirs = append(dirs, toolkitLibDirs()...)
	}
	for _, sp := range sitePackagesDirs() {
		for _, d := range s.pipDirs {
			dirs = append(dirs, filepath.Join(sp, d))
		}
	}
	for _, so := range s.sonames {
		names = append(names, so)
		for _, d := range dirs {
			p := filepath.Join(d, so)
			if _, err := os.Stat(p); err == nil && !slices.Contains(names, p) {
				names = append(names, p)
			}
		}
	}
	return names, false
}

// open loads the library from the first candidate that loads. The error
// names the library, every candidate tried with dlerror's reason, the
// directories searched and how to install it.
func (s libSpec) open() (*dl.Lib, error) {
	names, explicit := s.candidates()
	lib, err := dl.Open(names...)
	if err == nil {
		return lib, nil
	}
	if explicit {
		return nil, fmt.Errorf("%s: %s=%s does not load: %w", s.what, s.env, names[0], err)
	}
	return nil, fmt.Errorf("%s not found (searched %s): %w; %s",
		s.what, s.searchedDirs(), err, s.hint)
}

// searchedDirs describes where candidates looked, for error messages.
func (s libSpec) searchedDirs() string {
	parts := []string{"the dynamic loader's path"}
	if s.toolkit {
		parts = append(parts, strings.Join(toolkitLibDirs(), ", "))
	}
	if len(s.pipDirs) > 0 {
		sps := sitePackagesDirs()
		if len(sps) == 0 {
			parts = append(parts, "no Python site-packages directory with an nvidia/ package (pip's NVIDIA wheels) found")
		} else {
			parts = append(parts, fmt.Sprintf("{%s} under %s", strings.Join(s.pipDirs, ", "), strings.Join(sps, ", ")))
		}
	}
	if len(parts) == 1 {
		return "the dynamic loader's path (LD_LIBRARY_PATH, ld.so.cache, the default directories)"
	}
	return strings.Join(parts, "; ")
}

func driverSpec() libSpec {
	// The driver is installed with the kernel module, never by pip or the
	// toolkit (the toolkit's stubs/libcuda.so only links, it cannot run).
	// WSL puts it in /usr/lib/wsl/lib, which ld.so.cache normally covers.
	return libSpec{
		what: "CUDA driver (libcuda.so.1)", env: EnvDriverLib, hint: hintDriver,
		sonames: []string{"libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"},
	}
}

// majorsFor lists the CUDA major versions whose libraries can work with a
// driver, newest first: the driver's own major and older ones. A library
// newer than the driver is never tried: NVIDIA's compatibility rule is that
// a toolkit needs a driver of at least its major (CUDA 13: R580), so its
// cubins or PTX would not load and cuBLAS would not initialise.
// driverVersion 0 (unknown, e.g. the compile-only NVRTC test, where no
// driver runs anything) allows every major, newest first.
func majorsFor(driverVersion int) []int {
	all := []int{13, 12}
	if driverVersion <= 0 {
		return all
	}
	dm := driverVersion / 1000
	var out []int
	for _, m := range all {
		if m <= dm {
			out = append(out, m)
		}
	}
	return out
}

// newerThanDriver says why a loaded library of CUDA major libMajor cannot
// work with the driver, or "" when it can (or either version is unknown):
// the unversioned libnvrtc.so / libcublas.so may be of any version.
func newerThanDriver(what string, libMajor, driverVersion int) string {
	if libMajor <= 0 || driverVersion <= 0 || libMajor <= driverVersion/1000 {
		return ""
	}
	return fmt.Sprintf("%s is CUDA %d, newer than the driver's CUDA %s: a toolkit needs a driver of at least its major version", what, libMajor, driverVersionString(driverVersion))
}

// sonameMajor is the CUDA major in a library's soname ("libcublas.so.12"
// or a path ending in it: 12), or 0 when the name carries none.
func sonameMajor(name string) int {
	i := strings.LastIndex(name, ".so.")
	if i < 0 {
		return 0
	}
	v, _, _ := strings.Cut(name[i+4:], ".")
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func nvrtcSpec(driverVersion int) libSpec {
	s := libSpec{what: "NVRTC (libnvrtc)", env: EnvNVRTCLib, hint: hintNVRTC, toolkit: true}
	for _, m := range majorsFor(driverVersion) {
		s.sonames = append(s.sonames, fmt.Sprintf("libnvrtc.so.%d", m))
	}
	s.sonames = append(s.sonames, "libnvrtc.so")
	// nvidia-cuda-nvrtc-cu12: nvidia/cuda_nvrtc/lib/libnvrtc.so.12;
	// nvidia-cuda-nvrtc (CUDA 13): nvidia/cu13/lib/libnvrtc.so.13.
	s.pipDirs = []string{"nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"}
	return s
}

func cublasSpec(driverVersion int) libSpec {
	s := libSpec{what: "cuBLAS (libcublas)", env: EnvCublasLib, hint: hintCublas, toolkit: true}
	for _, m := range majorsFor(driverVersion) {
		s.sonames = append(s.sonames, fmt.Sprintf("libcublas.so.%d", m))
	}
	s.sonames = append(s.sonames, "libcublas.so")
	// nvidia-cublas-cu12: nvidia/cublas/lib/libcublas.so.12;
	// nvidia-cublas (CUDA 13): nvidia/cu13/lib/libcublas.so.13.
	s.pipDirs = []string{"nvidia/cu13/lib", "nvidia/cublas/lib"}
	return s
}

// toolkitLibDirs are the CUDA toolkit's library directories: $CUDA_HOME,
// $CUDA_PATH, then /usr/local/cuda.
func toolkitLibDirs() []string {
	arch := "x86_64-linux"
	if runtime.GOARCH == "arm64" {
		arch = "sbsa-linux"
	}
	var roots []string
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if v := os.Getenv(env); v != "" {
			roots = append(roots, v)
		}
	}
	roots = append(roots, "/usr/local/cuda")
	var dirs []string
	for _, r := range roots {
		for _, d := range []string{filepath.Join(r, "lib64"), filepath.Join(r, "targets", arch, "lib")} {
			if !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// sitePackagesDirs lists the Python package directories that exist, where
// pip puts NVIDIA's wheels (what PyTorch installs): the active virtualenv or
// conda environment, PYTHONPATH, the user site, pyenv's versions, and the
// system and /usr/local ones. They are found by globbing, not by running
// Python, so that starting peertune never runs another program.
func sitePackagesDirs() []string {
	var pats []string
	add := func(root string) {
		if root == "" {
			return
		}
		pats = append(pats,
			filepath.Join(root, "lib", "python3*", "site-packages"),
			filepath.Join(root, "lib64", "python3*", "site-packages"))
	}
	add(os.Getenv("VIRTUAL_ENV"))
	add(os.Getenv("CONDA_PREFIX"))
	for _, p := range filepath.SplitList(os.Getenv("PYTHONPATH")) {
		if p != "" {
			pats = append(pats, p)
		}
	}
	home, _ := os.UserHomeDir()
	if home != "" {
		pats = append(pats, filepath.Join(home, ".local", "lib", "python3*", "site-packages"))
	}
	pyenv := os.Getenv("PYENV_ROOT")
	if pyenv == "" && home != "" {
		pyenv = filepath.Join(home, ".pyenv")
	}
	if pyenv != "" {
		pats = append(pats, filepath.Join(pyenv, "versions", "*", "lib", "python3*", "site-packages"))
	}
	for _, root := range []string{"/opt/conda", "/usr/local", "/usr"} {
		add(root)
	}
	pats = append(pats,
		"/usr/local/lib/python3*/dist-packages",
		"/usr/lib/python3/dist-packages",
		"/usr/lib/python3*/dist-packages")
	var dirs []string
	for _, pat := range pats {
		matches, _ := filepath.Glob(pat)
		if len(matches) == 0 && !strings.ContainsAny(pat, "*?[") {
			matches = []string{pat}
		}
		// Newest Python first within one pattern (python3.12 before 3.9 is
		// not lexical, but any order finds the same wheels: each Python has
		// its own copy).
		slices.Sort(matches)
		slices.Reverse(matches)
		for _, m := range matches {
			if st, err := os.Stat(filepath.Join(m, "nvidia")); err == nil && st.IsDir() && !slices.Contains(dirs, m) {
				dirs = append(dirs, m)
			}
		}
	}
	return dirs
}
