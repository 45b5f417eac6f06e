package dl

import (
	"strings"
	"testing"
)

func TestOpenLibcAndResolveStrlen(t *testing.T) {
	lib, err := Open("libdoes-not-exist.so.7", "libc.so.6")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := lib.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if got := lib.Name(); got != "libc.so.6" {
		t.Errorf("Name() = %q, want libc.so.6 (the first candidate that loads)", got)
	}
	p, err := lib.Sym("strlen")
	if err != nil {
		t.Fatalf("Sym(strlen): %v", err)
	}
	if p == nil {
		t.Fatal("Sym(strlen) returned nil")
	}
	if n := callStrlen(p, "peertune"); n != 8 {
		t.Errorf("strlen through dlsym = %d, want 8", n)
	}
}

func TestMissingSymbol(t *testing.T) {
	lib, err := Open("libc.so.6")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer lib.Close()
	_, err = lib.Sym("peertune_no_such_symbol")
	if err == nil {
		t.Fatal("Sym of a missing symbol: want an error")
	}
	for _, want := range []string{"libc.so.6", "peertune_no_such_symbol"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestMissingLibraryNamesEveryCandidate(t *testing.T) {
	names := []string{"libpeertune-missing.so.1", "/nonexistent/dir/libpeertune-missing.so"}
	lib, err := Open(names...)
	if err == nil {
		lib.Close()
		t.Fatal("Open of missing libraries: want an error")
	}
	for _, n := range names {
		// Each candidate appears in the list and again with dlerror's reason.
		if c := strings.Count(err.Error(), n); c < 2 {
			t.Errorf("error %q names %q %d times, want it listed with its dlerror reason", err, n, c)
		}
	}
	if _, err := Open(); err == nil {
		t.Error("Open() with no names: want an error")
	}
}

func TestClosedLib(t *testing.T) {
	lib, err := Open("libc.so.6")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := lib.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := lib.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := lib.Sym("strlen"); err == nil {
		t.Error("Sym after Close: want an error")
	}
}
