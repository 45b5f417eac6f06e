package cpu

import (
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestEnvForcesGonum(t *testing.T) {
	t.Setenv(EnvBLAS, BLASGonum)
	be, err := New(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if be.BLAS() != BLASGonum || be.Name() != "cpu/gonum" {
		t.Errorf("%s=gonum: BLAS() = %q, Name() = %q", EnvBLAS, be.BLAS(), be.Name())
	}
}

func TestEnvBadValues(t *testing.T) {
	t.Setenv(EnvBLAS, "mkl")
	if _, err := New(DefaultOptions()); err == nil || !strings.Contains(err.Error(), EnvBLAS) {
		t.Errorf("%s=mkl: err = %v, want an error naming the variable", EnvBLAS, err)
	}
	t.Setenv(EnvBLAS, "")
	t.Setenv(EnvOpenBLASLib, "/nonexistent/libopenblas.so.0")
	_, err := New(DefaultOptions())
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/libopenblas.so.0") {
		t.Errorf("%s pointing nowhere: err = %v, want an error naming the path", EnvOpenBLASLib, err)
	}
	// The override is about OpenBLAS: forcing gonum ignores it.
	if _, err := New(Options{ForceGonum: true}); err != nil {
		t.Errorf("ForceGonum with a bad %s: %v", EnvOpenBLASLib, err)
	}
}

func TestEnvOpenBLASPath(t *testing.T) {
	requireOpenBLAS(t)
	t.Setenv(EnvOpenBLASLib, "libopenblas.so.0")
	be, err := New(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if be.BLAS() != BLASOpenBLAS || be.Name() != "cpu/openblas" {
		t.Errorf("BLAS() = %q, Name() = %q", be.BLAS(), be.Name())
	}
}

func TestLogsBLASOncePerProcess(t *testing.T) {
	// Reset the guard so the test also passes under -count=N; nothing else
	// in this package logs through a real logger.
	logBLASOnce = [2]sync.Once{}
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	for i := 0; i < 3; i++ {
		if _, err := New(Options{Logger: log, ForceGonum: true}); err != nil {
			t.Fatal(err)
		}
		// A no-op logger must not use up the one line.
		if _, err := New(Options{ForceGonum: true}); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d log lines after 3 gonum backends, want 1: %v", n, logs.All())
	}
	if msg := logs.All()[0].Message; !strings.Contains(msg, "gonum") {
		t.Errorf("log line %q does not say gonum", msg)
	}
}

func TestFallbackMessageSaysHowToInstall(t *testing.T) {
	t.Setenv(EnvBLAS, "")
	t.Setenv(EnvOpenBLASLib, "")
	logBLASOnce = [2]sync.Once{}
	core, logs := observer.New(zap.InfoLevel)
	// What New does on a machine without OpenBLAS.
	be, err := newWithNames(Options{Logger: zap.New(core)}, []string{"libopenblas-peertune-missing.so.0"})
	if err != nil {
		t.Fatal(err)
	}
	if be.BLAS() != BLASGonum {
		t.Fatalf("BLAS() = %q, want the gonum fallback", be.BLAS())
	}
	if logs.Len() != 1 || !strings.Contains(logs.All()[0].Message, "apt-get install libopenblas0-pthread") {
		t.Errorf("fallback log = %v, want one line saying apt-get install libopenblas0-pthread", logs.All())
	}
}
