package cpu

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"go.uber.org/zap"

	"github.com/peertune/peertune/kernels"
)

// Environment variables read by New.
const (
	// EnvBLAS selects the GEMM library: "gonum" forces the pure-Go
	// fallback, "openblas" makes a missing OpenBLAS an error, and "" or
	// "auto" uses OpenBLAS when it loads and gonum otherwise.
	EnvBLAS = "PEERTUNE_BLAS"
	// EnvOpenBLASLib names the OpenBLAS library (a path or soname) to load
	// instead of libopenblas.so.0 / libopenblas.so. Because it is an
	// explicit request, a library that does not load is an error, not a
	// silent fallback.
	EnvOpenBLASLib = "PEERTUNE_OPENBLAS_LIB"
)

// Options configure New.
type Options struct {
	// Logger receives one Info line per process saying which BLAS is in
	// use. nil means no logging.
	Logger *zap.Logger
	// ForceGonum uses gonum's pure-Go GEMM even when OpenBLAS is present
	// (tests of the fallback; the env var PEERTUNE_BLAS=gonum does the same).
	ForceGonum bool
	// Threads is how many goroutines the non-GEMM ops split their work
	// across. 0 means runtime.GOMAXPROCS at New. OpenBLAS sizes its own
	// thread pool for the big GEMMs (OPENBLAS_NUM_THREADS sets it).
	Threads int
}

// DefaultOptions returns Options with no logger, OpenBLAS when it loads, and
// one worker per GOMAXPROCS: the settings that use the whole machine.
func DefaultOptions() Options {
	return Options{}
}

// BLAS names returned by (*Backend).BLAS.
const (
	BLASOpenBLAS = "openblas"
	BLASGonum    = "gonum"
)

// Backend is the float32 CPU implementation of kernels.Backend. Every op runs
// to completion before it returns, so Sync has nothing to wait for. Like
// every Backend it is not safe for concurrent use; the ops themselves fan
// out over Options.Threads goroutines.
type Backend struct {
	log  *zap.Logger
	gemm sgemmer
	ob   *openBLAS // nil when gonum is in use
	// blasThreads is OpenBLAS's thread count when this Backend was made,
	// restored after attention lowers it (see singleThreadBLAS).
	blasThreads int
	blas        string // BLASOpenBLAS or BLASGonum
	threads     int

	rope map[ropeKey]*ropeTable // RoPE cos/sin tables, grown on demand

	// Attention scratch, reused across calls: per-worker tiles and the
	// backward's rowsum(dO∘O) vector. Only O(block × seq) per worker.
	workerScratch [][]float32
	attnD         []float32
}

var _ kernels.Backend = (*Backend)(nil)

// logBLASOnce guards the "which BLAS" Info line, one per variant per process.
// It is process-wide state on purpose: tests, benchmarks and in-process
// multi-node runs create many Backends, and the line is about the process's
// environment (is OpenBLAS installed?), so repeating it per Backend is noise.
var logBLASOnce [2]sync.Once

// Indexes of logBLASOnce.
const (
	logOpenBLAS = iota
	logGonum
)

// New returns a CPU backend. It loads OpenBLAS at run time when it can and
// otherwise falls back to gonum's pure-Go GEMM (see EnvBLAS, EnvOpenBLASLib).
func New(opts Options) (*Backend, error) {
	return newWithNames(opts, defaultOpenBLASNames)
}

// newWithNames is New with the default OpenBLAS candidates given (tests
// pass missing names to exercise the fallback on a machine that has it).
func newWithNames(opts Options, defaultNames []string) (*Backend, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Threads < 0 {
		return nil, fmt.Errorf("cpu: Options.Threads = %d, want >= 0", opts.Threads)
	}
	threads := opts.Threads
	if threads == 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	be := &Backend{log: log, threads: threads, rope: map[ropeKey]*ropeTable{}}

	mode := os.Getenv(EnvBLAS)
	switch mode {
	case "", "auto", BLASOpenBLAS, BLASGonum:
	default:
		return nil, fmt.Errorf("cpu: %s=%q: want %q, %q or %q", EnvBLAS, mode, "auto", BLASOpenBLAS, BLASGonum)
	}
	if opts.ForceGonum || mode == BLASGonum {
		why := "Options.ForceGonum"
		if mode == BLASGonum {
			why = EnvBLAS + "=" + BLASGonum
		}
		be.useGonum()
		be.logOnce(logGonum, "cpu backend: using gonum (pure Go) GEMM", zap.String("reason", "forced by "+why))
		return be, nil
	}

	names, explicit := defaultNames, false
	if p := os.Getenv(EnvOpenBLASLib); p != "" {
		names, explicit = []string{p}, true
	}
	ob, err := loadOpenBLAS(names)
	switch {
	case err == nil:
		be.gemm, be.ob, be.blas, be.blasThreads = ob, ob, BLASOpenBLAS, ob.threads()
		be.logOnce(logOpenBLAS, "cpu backend: using OpenBLAS GEMM",
			zap.String("lib", ob.lib.Name()), zap.String("config", ob.config), zap.Int("blas_threads", ob.threads()))
		return be, nil
	case explicit:
		return nil, fmt.Errorf("cpu: %s=%s: %w", EnvOpenBLASLib, names[0], err)
	case mode == BLASOpenBLAS:
		return nil, fmt.Errorf("cpu: %s=%s but OpenBLAS did not load (apt-get install libopenblas0-pthread): %w", EnvBLAS, mode, err)
	}
	be.useGonum()
	be.logOnce(logGonum, "cpu backend: OpenBLAS not found, using gonum (pure Go) GEMM, about 10x slower; "+
		"for the fast path: apt-get install libopenblas0-pthread (or set "+EnvOpenBLASLib+"=/path/to/libopenblas.so)",
		zap.Error(err))
	return be, nil
}

func (be *Backend) useGonum() { be.gemm, be.ob, be.blas = gonumBLAS{}, nil, BLASGonum }

// logOnce logs msg at Info the first time any Backend of this variant is
// created with a logger that would print it (a no-op logger does not use
// up the one line).
func (be *Backend) logOnce(variant int, msg string, fields ...zap.Field) {
	if !be.log.Core().Enabled(zap.InfoLevel) {
		return
	}
	logBLASOnce[variant].Do(func() { be.log.Info(msg, fields...) })
}

// Name is "cpu/openblas" or "cpu/gonum".
func (be *Backend) Name() string { return "cpu/" + be.blas }

// BLAS is the GEMM library in use: BLASOpenBLAS or BLASGonum.
func (be *Backend) BLAS() string { return be.blas }

// Threads is the number of goroutines the non-GEMM ops use.
func (be *Backend) Threads() int { return be.threads }

// Buffer is a CPU buffer: a []float32 in host memory. It implements
// kernels.Buffer and kernels.HostBuffer.
type Buffer struct {
	data []float32
}

var _ kernels.HostBuffer = (*Buffer)(nil)

// Len is the number of elements.
func (b *Buffer) Len() int { return len(b.data) }

// DType is always kernels.F32.
func (b *Buffer) DType() kernels.DType { return kernels.F32 }

// Slice returns elements [off, off+n) sharing memory with b. It panics when
// the range is outside b (a programming error, per the contract).
func (b *Buffer) Slice(off, n int) kernels.Buffer {
	if off < 0 || n < 0 || off > len(b.data)-n {
		panic(fmt.Sprintf("cpu: Buffer.Slice(%d, %d) out of range [0, %d)", off, n, len(b.data)))
	}
	// The capacity is clipped so that an append through Host cannot write
	// past the view into its neighbour.
	return &Buffer{data: b.data[off : off+n : off+n]}
}

// Host returns the elements; the slice aliases the buffer.
func (b *Buffer) Host() []float32 { return b.data }

// Wrap returns a Buffer over data without copying (data is then shared with
// the caller), e.g. for weights the caller already holds in memory.
func (be *Backend) Wrap(data []float32) *Buffer { return &Buffer{data: data} }

// Alloc returns a zeroed float32 buffer of n elements. The CPU backend keeps
// everything in float32, so BF16 is an error.
func (be *Backend) Alloc(n int, dt kernels.DType) (kernels.Buffer, error) {
	if dt != kernels.F32 {
		return nil, fmt.Errorf("cpu: Alloc: dtype %v not supported (the CPU backend is float32 only)", dt)
	}
	if n < 0 {
		return nil, fmt.Errorf("cpu: Alloc: n = %d, want >= 0", n)
	}
	return &Buffer{data: make([]float32, n)}, nil
}

// Free drops the buffer's memory (the garbage collector reclaims it once no
// view or Host slice refers to it). A freed buffer has length 0, so a later
// use fails its shape check instead of reading stale data.
func (be *Backend) Free(b kernels.Buffer) {
	if cb, ok := b.(*Buffer); ok && cb != nil {
		cb.data = nil
	}
}

// CopyIn copies src into dst.
func (be *Backend) CopyIn(dst kernels.Buffer, src []float32) error {
	d, err := host("CopyIn", "dst", dst)
	if err != nil {
		return err
	}
	if len(src) != len(d) {
		return fmt.Errorf("cpu: CopyIn: len(src) = %d, dst has %d elements", len(src), len(d))
	}
	copy(d, src)
	return nil
}

// CopyOut copies src into dst.
func (be *Backend) CopyOut(dst []float32, src kernels.Buffer) error {
	s, err := host("CopyOut", "src", src)
	if err != nil {
		return err
	}
	if len(dst) != len(s) {
		return fmt.Errorf("cpu: CopyOut: len(dst) = %d, src has %d elements", len(dst), len(s))
	}
	copy(dst, s)
	return nil
}

// Sync returns nil: every CPU op has finished when it returns.
func (be *Backend) Sync() error { return nil }

// host returns the storage of a CPU buffer, or an error naming the op and
// argument when b is nil or belongs to another backend. Buffers of another
// cpu.Backend are accepted: they are plain host memory with no per-backend
// state, so sharing them is safe.
func host(op, arg string, b kernels.Buffer) ([]float32, error) {
	switch cb := b.(type) {
	case *Buffer:
		if cb == nil {
			return nil, fmt.Errorf("cpu: %s: %s is nil", op, arg)
		}
		return cb.data, nil
	case nil:
		return nil, fmt.Errorf("cpu: %s: %s is nil", op, arg)
	default:
		return nil, fmt.Errorf("cpu: %s: %s is a %T from another backend, not a cpu buffer", op, arg, b)
	}
}

// optHost is host for optional arguments (gradient outputs, bias): a nil
// interface or nil *Buffer gives a nil slice and no error.
func optHost(op, arg string, b kernels.Buffer) ([]float32, bool, error) {
	if b == nil {
		return nil, false, nil
	}
	if cb, ok := b.(*Buffer); ok && cb == nil {
		return nil, false, nil
	}
	d, err := host(op, arg, b)
	return d, err == nil, err
}

// wantLen checks one buffer length against its shape.
func wantLen(op, arg string, got int, want int, shape string) error {
	if got != want {
		return fmt.Errorf("cpu: %s: %s has %d elements, want %s=%d", op, arg, got, shape, want)
	}
	return nil
}

// errOverflow is returned when a shape's element count does not fit an int.
var errOverflow = errors.New("shape product overflows int")

// numel multiplies non-negative sizes, failing on a negative size or
// overflow so that absurd shapes give an error rather than a wrapped count.
func numel(op string, names string, dims ...int) (int, error) {
	p := 1
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("cpu: %s: negative size in (%s) = %v", op, names, dims)
		}
		if d != 0 && p > (1<<62)/d {
			return 0, fmt.Errorf("cpu: %s: (%s) = %v: %w", op, names, dims, errOverflow)
		}
		p *= d
	}
	return p, nil
}
