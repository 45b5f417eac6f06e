package nccl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeEnv is a searchEnv over a temporary folder: only the variables in env
// are set, the dynamic linker is not asked, and the standard folders and
// well-known site-packages live under root.
func fakeEnv(root string, env map[string]string) searchEnv {
	e := osSearchEnv()
	e.getenv = func(k string) string { return env[k] }
	e.linker = false
	e.sysDirs = []string{filepath.Join(root, "usr/lib/x86_64-linux-gnu"), filepath.Join(root, "usr/lib64")}
	e.sitePatterns = []string{filepath.Join(root, "usr/local/lib/python3*/dist-packages")}
	return e
}

// touch creates an empty file (and its folders) and returns its path.
func touch(t *testing.T, path string, data ...byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSearchOrder(t *testing.T) {
	root := t.TempDir()
	lib := func(dir string) string { return touch(t, filepath.Join(root, dir, ncclSoname)) }
	site := func(dir string) string { return lib(filepath.Join(dir, pipNCCLDir)) }
	override := lib("override")
	ld1, ld2 := lib("ld1"), lib("ld2")
	sys := lib("usr/lib64")
	explicitSite := site("mysite")
	venv := site("venv/lib/python3.12/site-packages")
	conda := site("conda/lib/python3.10/site-packages")
	user := site("home/.local/lib/python3.11/site-packages")
	pyenv := site("pyenv/versions/3.11.7/lib/python3.11/site-packages")
	system := site("usr/local/lib/python3.10/dist-packages")
	site("pyenv/versions/3.11.7/lib/python3.11/site-packages-not") // not a site-packages: ignored

	env := fakeEnv(root, map[string]string{
		EnvLib:            filepath.Join(root, "override"), // a folder: the soname inside it
		"LD_LIBRARY_PATH": filepath.Join(root, "ld1") + "::" + filepath.Join(root, "nothing") + ":" + filepath.Join(root, "ld2"),
		EnvPythonSite:     filepath.Join(root, "mysite"),
		"VIRTUAL_ENV":     filepath.Join(root, "venv"),
		"CONDA_PREFIX":    filepath.Join(root, "conda"),
		"HOME":            filepath.Join(root, "home"),
		"PYENV_ROOT":      filepath.Join(root, "pyenv"),
	})
	cands, looked := env.plan(ncclSoname, EnvLib, env.sysDirs, pipNCCLDir)
	want := []candidate{
		{override, EnvLib},
		{ld1, "LD_LIBRARY_PATH"},
		{ld2, "LD_LIBRARY_PATH"},
		{sys, "standard library folder"},
		{explicitSite, "Python site-packages"},
		{venv, "Python site-packages"},
		{conda, "Python site-packages"},
		{user, "Python site-packages"},
		{pyenv, "Python site-packages"},
		{system, "Python site-packages"},
	}
	if len(cands) != len(want) {
		t.Fatalf("got %d candidates %v, want %d", len(cands), cands, len(want))
	}
	for i := range want {
		if cands[i] != want[i] {
			t.Errorf("candidate %d = %v, want %v", i, cands[i], want[i])
		}
	}
	all := strings.Join(looked, "\n")
	for _, w := range []string{EnvLib + "=", filepath.Join(root, "nothing"), filepath.Join(root, "usr/lib/x86_64-linux-gnu"),
		filepath.Join(root, "pyenv/versions/*/lib/python3*/site-packages"), pipNCCLDir} {
		if !strings.Contains(all, w) {
			t.Errorf("looked %q does not mention %q", all, w)
		}
	}
}

func TestSearchDefaultsFromHome(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, "home")
	pyenv := touch(t, filepath.Join(home, ".pyenv/versions/3.11.7/lib/python3.11/site-packages", pipNCCLDir, ncclSoname))
	user := touch(t, filepath.Join(home, ".local/lib/python3.11/site-packages", pipNCCLDir, ncclSoname))
	env := fakeEnv(root, map[string]string{"HOME": home}) // no PYENV_ROOT, no PYTHONUSERBASE
	cands, _ := env.plan(ncclSoname, EnvLib, env.sysDirs, pipNCCLDir)
	if len(cands) != 2 || cands[0].path != user || cands[1].path != pyenv {
		t.Fatalf("candidates %v, want the user site then ~/.pyenv", cands)
	}
}

func TestSearchEnvLibFile(t *testing.T) {
	env := fakeEnv(t.TempDir(), map[string]string{EnvLib: "/opt/x/libnccl.so.2.99"})
	cands, _ := env.plan(ncclSoname, EnvLib, env.sysDirs, pipNCCLDir)
	if len(cands) != 1 || cands[0] != (candidate{"/opt/x/libnccl.so.2.99", EnvLib}) {
		t.Fatalf("an explicit file is tried as given, even if missing: %v", cands)
	}
}

// This machine's real search must reach pip's install location (on the
// development machines: a pyenv Python).
func TestSearchFindsPipInstall(t *testing.T) {
	lib := requireLib(t)
	if lib.Source() == "Python site-packages" && !strings.HasSuffix(lib.Path(), filepath.Join(pipNCCLDir, ncclSoname)) {
		t.Errorf("site-packages library at an unexpected path %s", lib.Path())
	}
	t.Logf("Default found %s by %s", lib.Path(), lib.Source())
}

func TestNCCLLoadWithoutLibraryListsPaths(t *testing.T) {
	root := t.TempDir()
	env := fakeEnv(root, map[string]string{EnvLib: "/nonexistent", "HOME": filepath.Join(root, "home")})
	lib, err := load(env)
	if err == nil {
		t.Fatalf("loaded %s", lib.Path())
	}
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("error does not wrap ErrLibraryNotFound: %v", err)
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		"/nonexistent",                   // the override, with dlerror's reason
		"No such file",                   // ... which is
		"LD_LIBRARY_PATH (unset)",        //
		filepath.Join(root, "usr/lib64"), // standard folders
		filepath.Join(root, "home/.pyenv/versions/*/lib/python3*/site-packages"), // pyenv
		filepath.Join(root, "home/.local/lib/python3*/site-packages"),            // user site
		"nvidia/nccl/lib/libnccl.so.2",
		"pip install nvidia-nccl-cu12",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
}

func TestNCCLLoadRefusesBrokenFile(t *testing.T) {
	root := t.TempDir()
	bad := touch(t, filepath.Join(root, "site", pipNCCLDir, ncclSoname), []byte(strings.Repeat("this is not an ELF shared object, just text. ", 10))...)
	env := fakeEnv(root, map[string]string{EnvPythonSite: filepath.Join(root, "site")})
	_, err := load(env)
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("got %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "refused") || !strings.Contains(msg, bad) || !strings.Contains(msg, "ELF") {
		t.Errorf("error does not say the file was refused and why: %v", err)
	}
}

// A real libnccl found through PEERTUNE_PYTHON_SITE loads; an override that
// fails is reported next to what was loaded instead.
func TestNCCLLoadFromSitePackages(t *testing.T) {
	real := requireLib(t)
	path := real.Path()
	if !filepath.IsAbs(path) {
		t.Skipf("skipping: the default NCCL came from the dynamic linker (%s), no file path to link to", path)
	}
	root := t.TempDir()
	link := filepath.Join(root, "site", pipNCCLDir, ncclSoname)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	env := fakeEnv(root, map[string]string{EnvPythonSite: filepath.Join(root, "site"), EnvLib: "/nonexistent/libnccl.so.2"})
	lib, err := load(env) // the same file: dlopen hands back the already-loaded NCCL
	if err != nil {
		t.Fatal(err)
	}
	if lib.Path() != link || lib.Version() != real.Version() {
		t.Fatalf("loaded %s %v, want %s %v", lib.Path(), lib.Version(), link, real.Version())
	}
	if !strings.Contains(lib.Source(), "Python site-packages") || !strings.Contains(lib.Source(), EnvLib+" refused") {
		t.Errorf("source %q should say site-packages and that the override was refused", lib.Source())
	}
}
