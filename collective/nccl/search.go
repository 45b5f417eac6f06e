package nccl

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

const (
	// ncclSoname is the library peertune loads: NCCL 2's soname.
	ncclSoname = "libnccl.so.2"
	// cudaSoname is the CUDA driver library (installed with the NVIDIA
	// driver, never by pip).
	cudaSoname = "libcuda.so.1"

	// EnvLib names the NCCL library (a file, or a folder holding
	// libnccl.so.2) to try first.
	EnvLib = "PEERTUNE_NCCL_LIB"
	// EnvPythonSite adds Python site-packages folders (colon-separated) to
	// the ones searched for pip's nvidia/nccl/lib.
	EnvPythonSite = "PEERTUNE_PYTHON_SITE"

	// pipNCCLDir is where pip's nvidia-nccl-cu12 and nvidia-nccl-cu13 put
	// libnccl.so.2, relative to site-packages.
	pipNCCLDir = "nvidia/nccl/lib"
)

// searchEnv is everything the library search reads from the machine, so
// tests can run it against temporary folders.
type searchEnv struct {
	getenv func(string) string
	exists func(string) bool // a regular file or a link to one
	isDir  func(string) bool
	glob   func(string) ([]string, error)
	// linker: also try the bare soname, which dlopen resolves through the
	// dynamic linker's own search (LD_LIBRARY_PATH as the process started,
	// ld.so.cache, /lib, /usr/lib).
	linker bool
	// sysDirs are the standard library folders, searched explicitly so the
	// error can list them.
	sysDirs []string
	// sitePatterns are well-known site-packages globs that do not depend
	// on the environment.
	sitePatterns []string
}

// osSearchEnv is the real machine.
func osSearchEnv() searchEnv {
	return searchEnv{
		getenv: os.Getenv,
		exists: func(p string) bool {
			fi, err := os.Stat(p)
			return err == nil && fi.Mode().IsRegular()
		},
		isDir: func(p string) bool {
			fi, err := os.Stat(p)
			return err == nil && fi.IsDir()
		},
		glob:         filepath.Glob,
		linker:       true,
		sysDirs:      standardLibDirs(),
		sitePatterns: standardSitePatterns(),
	}
}

// multiarch is Debian's multiarch triplet for this architecture.
func multiarch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "ppc64le":
		return "powerpc64le-linux-gnu"
	}
	return runtime.GOARCH + "-linux-gnu"
}

// standardLibDirs are where distribution packages (NVIDIA's libnccl2 .deb
// and .rpm, the driver) and the CUDA toolkit put libraries.
func standardLibDirs() []string {
	return []string{
		"/usr/lib/" + multiarch(),
		"/usr/lib64",
		"/usr/lib",
		"/usr/local/lib",
		"/usr/local/cuda/lib64",
	}
}

// cudaLibDirs adds the places container runtimes and WSL mount the driver.
func cudaLibDirs() []string {
	return append(standardLibDirs(), "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib")
}

// standardSitePatterns are site-packages of system and common container
// Pythons.
func standardSitePatterns() []string {
	return []string{
		"/usr/local/lib/python3*/site-packages",
		"/usr/local/lib/python3*/dist-packages",
		"/usr/lib/python3/dist-packages",
		"/usr/lib/python3*/site-packages",
		"/usr/lib/python3*/dist-packages",
		"/opt/conda/lib/python3*/site-packages",
	}
}

// sitePatterns lists, in search order, the site-packages globs derived from
// the environment, then the well-known ones.
func (e searchEnv) sitePatternsFor() []string {
	var pats []string
	for _, d := range filepath.SplitList(e.getenv(EnvPythonSite)) {
		if d != "" {
			pats = append(pats, d)
		}
	}
	for _, prefix := range []string{e.getenv("VIRTUAL_ENV"), e.getenv("CONDA_PREFIX")} {
		if prefix != "" {
			pats = append(pats, filepath.Join(prefix, "lib/python3*/site-packages"))
		}
	}
	home := e.getenv("HOME")
	userBase := e.getenv("PYTHONUSERBASE")
	if userBase == "" && home != "" {
		userBase = filepath.Join(home, ".local")
	}
	if userBase != "" {
		pats = append(pats, filepath.Join(userBase, "lib/python3*/site-packages"))
	}
	pyenv := e.getenv("PYENV_ROOT")
	if pyenv == "" && home != "" {
		pyenv = filepath.Join(home, ".pyenv")
	}
	if pyenv != "" {
		pats = append(pats, filepath.Join(pyenv, "versions/*/lib/python3*/site-packages"))
	}
	return append(pats, e.sitePatterns...)
}

// candidate is one place a library may be loaded from.
type candidate struct {
	path string // a path, or the bare soname for the dynamic linker's search
	from string // which rule produced it, for logs and errors
}

// plan lists, in search order, the candidates that exist (plus the ones
// that must be tried even if they do not: an explicit override and the
// dynamic linker's search), and describes every place it looked.
//
// Order, for soname libnccl.so.2 (issue: PEERTUNE_NCCL_LIB, LD_LIBRARY_PATH,
// the standard library dirs, then Python site-packages):
//  1. $PEERTUNE_NCCL_LIB (a file, or a folder holding the soname);
//  2. each folder of $LD_LIBRARY_PATH;
//  3. the dynamic linker's search (bare soname), then the standard folders;
//  4. <site-packages>/nvidia/nccl/lib for each site-packages found.
func (e searchEnv) plan(soname, envLib string, sysDirs []string, pipDir string) (cands []candidate, looked []string) {
	seen := map[string]bool{}
	add := func(path, from string) {
		key := path
		if strings.ContainsRune(path, '/') {
			key = filepath.Clean(path)
		}
		if !seen[key] {
			seen[key] = true
			cands = append(cands, candidate{path, from})
		}
	}
	if envLib != "" {
		if v := e.getenv(envLib); v != "" {
			p := v
			if e.isDir(v) {
				p = filepath.Join(v, soname)
			}
			add(p, envLib)
			looked = append(looked, fmt.Sprintf("%s=%s", envLib, v))
		} else {
			looked = append(looked, envLib+" (unset)")
		}
	}
	var ldDirs []string
	for _, d := range filepath.SplitList(e.getenv("LD_LIBRARY_PATH")) {
		if d == "" {
			continue
		}
		ldDirs = append(ldDirs, d)
		if p := filepath.Join(d, soname); e.exists(p) {
			add(p, "LD_LIBRARY_PATH")
		}
	}
	if len(ldDirs) > 0 {
		looked = append(looked, "LD_LIBRARY_PATH folders "+strings.Join(ldDirs, ", "))
	} else {
		looked = append(looked, "LD_LIBRARY_PATH (unset)")
	}
	if e.linker {
		add(soname, "dynamic linker")
		looked = append(looked, "the dynamic linker's search for "+soname+" (ld.so.cache, /lib, /usr/lib)")
	}
	for _, d := range sysDirs {
		if p := filepath.Join(d, soname); e.exists(p) {
			add(p, "standard library folder")
		}
	}
	if len(sysDirs) > 0 {
		looked = append(looked, "standard library folders "+strings.Join(sysDirs, ", "))
	}
	if pipDir != "" {
		pats := e.sitePatternsFor()
		for _, pat := range pats {
			matches, _ := e.glob(filepath.Join(pat, pipDir, soname)) // only ErrBadPattern, and ours are valid
			for _, m := range matches {
				if e.exists(m) {
					add(m, "Python site-packages")
				}
			}
		}
		looked = append(looked, fmt.Sprintf("Python site-packages %s/%s under %s", pipDir, soname, strings.Join(pats, ", ")))
	}
	return cands, looked
}
