package cuda

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"unsafe"

	"go.uber.org/zap"

	"github.com/peertune/peertune/kernels"
)

// EnvTF32 overrides Options.TF32: "1" runs float32 GEMMs on TF32 tensor
// cores, "0" in IEEE float32.
const EnvTF32 = "PEERTUNE_CUDA_TF32"

// Options configure New.
type Options struct {
	// Device is the CUDA device ordinal (as CUDA_VISIBLE_DEVICES numbers
	// them).
	Device int
	// Logger receives one Info line per process and device saying which GPU
	// and libraries are in use. nil means no logging.
	Logger *zap.Logger
	// Attention chooses the attention kernels: "flash" (one pass on the
	// CUDA cores), "gemm" (scores through tensor-core GEMMs) or "auto"/""
	// (GEMMs from 256 positions on). EnvAttention overrides it.
	Attention string
	// TF32 runs float32 GEMMs on tensor cores in TF32 (10-bit mantissa
	// inputs, float32 accumulation; cuBLAS CUBLAS_COMPUTE_32F_FAST_TF32),
	// about 8x faster on A100/H100 than IEEE float32. The other kernels are
	// float32 either way. EnvTF32 overrides it.
	TF32 bool
}

// DefaultOptions returns device 0 with TF32 GEMMs: what PyTorch users get
// with torch.backends.cuda.matmul.allow_tf32 = True, the usual setting for
// fine-tuning (LoRA and full fine-tuning are insensitive to TF32's input
// rounding, and the speed-up is large).
func DefaultOptions() Options { return Options{TF32: true} }

// Backend is the CUDA implementation of kernels.Backend on one GPU. Every
// op is issued on one stream and returns before the GPU has run it; errors
// of the GPU itself surface at the next call that waits (Sync, CopyOut).
// Like every Backend it is not safe for concurrent use.
type Backend struct {
	log  *zap.Logger
	g    gpu
	info *deviceInfo
	fns  map[string]*kernelFn
	tf32 bool
	name string

	// Device scratch, grown on demand: int32 arguments (tokens, targets,
	// positions), attention's rowsum(dO∘O), SumSquares' partial sums.
	ints    scratch
	attnD   scratch
	partial scratch
	half    [2]scratch // bf16 copies of float32 GEMM operands (Matmul with a bf16 operand)
	stage   []scratch  // float32 copies of bf16 arguments of the other ops (mixed.go)
	// attention through GEMMs: [E, T, T] scores and their gradients
	attnS, attnDP scratch
	attn          string // "auto", "flash" or "gemm" (ops_attention_gemm.go)
	attnBudget    int    // bytes for the score buffers; 0: attnScoresBudget

	rope map[ropeKey]*ropeTable

	closed bool
}

var _ kernels.Backend = (*Backend)(nil)

// logOnce guards the "which GPU" Info line, one per device ordinal per
// process: tests and benchmarks create many Backends, and the line is about
// the machine.
var logOnce sync.Map // device ordinal -> *sync.Once

// New returns a Backend on GPU opts.Device: it loads the driver, NVRTC and
// cuBLAS (once per process), retains the device's primary context, creates
// a stream and a cuBLAS handle, and loads every kernel, compiling the
// embedded sources with NVRTC for the device's architecture unless the disk
// cache (see EnvCacheDir) has them.
//
// Without a driver, a GPU, NVRTC or cuBLAS the error names what is missing,
// where it was looked for and how to install it; IsNotAvailable(err) is
// then true.
func New(opts Options) (*Backend, error) {
	l, err := loadLibs()
	if err != nil {
		return nil, err
	}
	if l.noDev != nil {
		return nil, l.noDev
	}
	if opts.Device < 0 || opts.Device >= l.nDev {
		return nil, fmt.Errorf("cuda: Options.Device = %d, but %d GPU(s) are visible", opts.Device, l.nDev)
	}
	switch v := os.Getenv(EnvTF32); v {
	case "":
	case "0":
		opts.TF32 = false
	case "1":
		opts.TF32 = true
	default:
		return nil, fmt.Errorf("cuda: %s=%q: want 0 or 1", EnvTF32, v)
	}
	mode, err := attnMode(opts.Attention)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	info, err := l.drv.device(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", opts.Device, err)
	}
	g, err := openGPU(l, info)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d (%s): %w", opts.Device, info.name, err)
	}
	be := &Backend{log: log, g: g, info: info, tf32: opts.TF32, attn: mode, rope: map[ropeKey]*ropeTable{}}
	be.name = "cuda/" + info.name
	arch := 10*info.major + info.minor
	if arch < 75 && l.nv.major >= 13 {
		// CUDA 13 (NVRTC and cuBLAS) dropped Maxwell, Pascal and Volta.
		g.close()
		return nil, unavailable("cuda: device %d (%s) is sm_%d, which CUDA %d no longer supports (NVRTC %s loaded): use the CUDA 12 libraries (%s; %s)",
			opts.Device, info.name, arch, l.nv.major, l.nv.versionString(), hintNVRTC, hintCublas)
	}
	var compiled, hits int
	be.fns = map[string]*kernelFn{}
	for _, m := range moduleNames {
		fns, img, err := loadModuleCached(l, g, m, arch)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("cuda: device %d (%s, sm_%d): module %s: %w", opts.Device, info.name, arch, m, err)
		}
		if img.hit {
			hits++
		} else {
			compiled++
		}
		if img.log != "" {
			log.Warn("cuda: NVRTC warnings", zap.String("module", m), zap.String("log", img.log))
		}
		for k, f := range fns {
			be.fns[k] = f
		}
	}
	if log.Core().Enabled(zap.InfoLevel) {
		once, _ := logOnce.LoadOrStore(opts.Device, &sync.Once{})
		once.(*sync.Once).Do(func() {
			log.Info("cuda backend: using GPU",
				zap.Int("device", opts.Device), zap.String("name", info.name),
				zap.String("arch", fmt.Sprintf("sm_%d", arch)), zap.Int("sms", info.sms),
				zap.Float64("mem_gib", float64(info.totalMem)/(1<<30)),
				zap.String("driver", l.drv.lib.Name()), zap.String("cuda", driverVersionString(l.drv.version)),
				zap.String("nvrtc", l.nv.lib.Name()), zap.String("nvrtc_version", l.nv.versionString()),
				zap.String("cublas", l.blas.lib.Name()), zap.Int("cublas_version", g.blas.ver),
				zap.Bool("tf32", be.tf32), zap.String("cubin_cache", l.comp.cacheDir),
				zap.Int("modules_compiled", compiled), zap.Int("modules_cached", hits))
		})
	}
	return be, nil
}

// loadModuleCached compiles (or fetches) a module and loads it; an image
// from the disk cache that the driver rejects is dropped, recompiled and
// loaded once more.
func loadModuleCached(l *libs, g *cudaGPU, module string, arch int) (map[string]*kernelFn, *moduleImage, error) {
	var sigs []kernelSig
	for _, s := range l.sigs {
		if s.module == module {
			sigs = append(sigs, s)
		}
	}
	img, err := l.comp.image(module, arch)
	if err != nil {
		return nil, nil, err
	}
	fns, err := g.loadModule(img, sigs)
	var ce *cuError
	if err != nil && img.hit && errors.As(err, &ce) &&
		(ce.code == cudaErrorInvalidImage || ce.code == cudaErrorNoBinaryGPU || ce.code == cudaErrorUnsupPTX || ce.code == cudaErrorInvalidPTX) {
		l.comp.forget(img)
		if img, err = l.comp.image(module, arch); err != nil {
			return nil, nil, err
		}
		fns, err = g.loadModule(img, sigs)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load %s image (NVRTC %s; a driver older than NVRTC cannot load its cubins: %s): %w",
			img.target, l.nv.versionString(), "use the NVRTC of the driver's CUDA version or set "+EnvNVRTCLib, err)
	}
	return fns, img, nil
}

// Close waits for the GPU and releases the stream, the cuBLAS handle, the
// modules, the scratch memory and the context reference. Buffers must be
// freed first (their memory belongs to the context, which other users of
// the primary context keep alive). Closing twice is a no-op.
func (be *Backend) Close() error {
	if be.closed {
		return nil
	}
	be.closed = true
	be.g.sync() // queued kernels may still use the scratch freed below; close reports a sticky error again
	for _, s := range []*scratch{&be.ints, &be.attnD, &be.partial, &be.half[0], &be.half[1], &be.attnS, &be.attnDP} {
		s.release(be.g)
	}
	for i := range be.stage {
		be.stage[i].release(be.g)
	}
	for _, t := range be.rope {
		be.g.free(t.cos)
		be.g.free(t.sin)
	}
	be.rope = nil
	return be.g.close()
}

// Name is "cuda/<GPU name>", e.g. "cuda/NVIDIA H200".
func (be *Backend) Name() string { return be.name }

// Device describes the GPU.
func (be *Backend) Device() DeviceInfo { return be.info.public() }

// HasBF16 reports whether the GPU has bf16 tensor cores (compute
// capability 8.0 and later), which bf16 GEMMs need: cuBLAS refuses
// CUDA_R_16BF GEMMs on older GPUs.
func (be *Backend) HasBF16() bool { return be.info.major >= 8 }

// TF32 reports whether float32 GEMMs run in TF32.
func (be *Backend) TF32() bool { return be.tf32 }

// MemInfo returns the GPU's free and total memory in bytes.
func (be *Backend) MemInfo() (free, total uint64, err error) {
	g, ok := be.g.(*cudaGPU)
	if !ok {
		return 0, 0, errors.New("cuda: MemInfo: not a CUDA device")
	}
	return g.memInfo()
}

// allocation is one cuMemAlloc; Buffers are views of it.
type allocation struct {
	be    *Backend
	ptr   uint64
	n     int // elements
	dt    kernels.DType
	root  *Buffer
	freed bool
}

// Buffer is GPU memory: a view [off, off+n) of an allocation. It implements
// kernels.Buffer (not kernels.HostBuffer: its elements are not in host
// memory).
type Buffer struct {
	a   *allocation
	off int
	n   int
}

// Len is the number of elements.
func (b *Buffer) Len() int { return b.n }

// DType is the element type.
func (b *Buffer) DType() kernels.DType { return b.a.dt }

// Slice returns elements [off, off+n) sharing memory with b. It panics when
// the range is outside b (a programming error, per the contract).
func (b *Buffer) Slice(off, n int) kernels.Buffer {
	if off < 0 || n < 0 || off > b.n-n {
		panic(fmt.Sprintf("cuda: Buffer.Slice(%d, %d) out of range [0, %d)", off, n, b.n))
	}
	return &Buffer{a: b.a, off: b.off + off, n: n}
}

// Ptr is the device address of the view's first element, for code that
// hands the buffer to another CUDA library (NCCL). The memory belongs to
// the Backend's stream: synchronise (Sync) before another stream uses it.
func (b *Buffer) Ptr() uint64 { return b.ptr() }

func (b *Buffer) ptr() uint64 {
	if b == nil {
		return 0
	}
	return b.a.ptr + uint64(b.off*elemSize(b.a.dt))
}

func (b *Buffer) bytes() int { return b.n * elemSize(b.a.dt) }

// overlaps reports whether two views share an element.
func (b *Buffer) overlaps(c *Buffer) bool {
	if b == nil || c == nil || b.a != c.a || b.n == 0 || c.n == 0 {
		return false
	}
	return b.off < c.off+c.n && c.off < b.off+b.n
}

func (b *Buffer) same(c *Buffer) bool {
	return b != nil && c != nil && b.a == c.a && b.off == c.off && b.n == c.n
}

func elemSize(dt kernels.DType) int {
	if dt == kernels.BF16 {
		return 2
	}
	return 4
}

// Alloc returns a zeroed buffer of n elements of dt (F32 or BF16).
func (be *Backend) Alloc(n int, dt kernels.DType) (kernels.Buffer, error) {
	if be.closed {
		return nil, errors.New("cuda: Alloc: backend is closed")
	}
	if dt != kernels.F32 && dt != kernels.BF16 {
		return nil, fmt.Errorf("cuda: Alloc: dtype %v not supported", dt)
	}
	if n < 0 || n > math.MaxInt64/8 {
		return nil, fmt.Errorf("cuda: Alloc: n = %d, want >= 0", n)
	}
	a := &allocation{be: be, n: n, dt: dt}
	if n > 0 {
		p, err := be.g.alloc(n * elemSize(dt))
		if err != nil {
			return nil, fmt.Errorf("cuda: Alloc(%d %v): %w", n, dt, err)
		}
		a.ptr = p
		if err := be.g.memsetD8(p, 0, n*elemSize(dt)); err != nil {
			be.g.free(p)
			return nil, fmt.Errorf("cuda: Alloc(%d %v): zero: %w", n, dt, err)
		}
	}
	a.root = &Buffer{a: a, n: n}
	return a.root, nil
}

// Free releases the memory of a buffer returned by Alloc. Freeing a view
// (from Slice) does nothing: its memory is released with its allocation.
// Using a freed buffer returns an error.
func (be *Backend) Free(b kernels.Buffer) {
	cb, ok := b.(*Buffer)
	if !ok || cb == nil || cb.a.be != be || cb.a.root != cb || cb.a.freed {
		return
	}
	if be.closed {
		// The context reference is gone; the memory went with it (Close
		// documents that buffers are freed first).
		cb.a.freed = true
		return
	}
	cb.a.freed = true
	if cb.a.ptr != 0 {
		if err := be.g.free(cb.a.ptr); err != nil {
			be.log.Warn("cuda: Free", zap.Error(err))
		}
	}
}

// CopyIn copies host floats into dst, rounding to bfloat16 (nearest even)
// for a BF16 buffer.
func (be *Backend) CopyIn(dst kernels.Buffer, src []float32) error {
	d, err := be.anyBuf("CopyIn", "dst", dst)
	if err != nil {
		return err
	}
	if len(src) != d.n {
		return fmt.Errorf("cuda: CopyIn: len(src) = %d, dst has %d elements", len(src), d.n)
	}
	if d.n == 0 {
		return nil
	}
	if d.a.dt == kernels.BF16 {
		h := make([]uint16, d.n)
		for i, v := range src {
			h[i] = bf16FromF32(v)
		}
		err = be.g.htod(d.ptr(), unsafe.Pointer(&h[0]), d.bytes())
	} else {
		err = be.g.htod(d.ptr(), unsafe.Pointer(&src[0]), d.bytes())
	}
	if err != nil {
		return fmt.Errorf("cuda: CopyIn: %w", err)
	}
	return nil
}

// CopyOut waits for the ops issued so far and copies src to host floats.
func (be *Backend) CopyOut(dst []float32, src kernels.Buffer) error {
	s, err := be.anyBuf("CopyOut", "src", src)
	if err != nil {
		return err
	}
	if len(dst) != s.n {
		return fmt.Errorf("cuda: CopyOut: len(dst) = %d, src has %d elements", len(dst), s.n)
	}
	if s.n == 0 {
		return be.Sync()
	}
	if s.a.dt == kernels.BF16 {
		h := make([]uint16, s.n)
		if err := be.g.dtoh(unsafe.Pointer(&h[0]), s.ptr(), s.bytes()); err != nil {
			return fmt.Errorf("cuda: CopyOut: %w", err)
		}
		for i, v := range h {
			dst[i] = f32FromBF16(v)
		}
		return nil
	}
	if err := be.g.dtoh(unsafe.Pointer(&dst[0]), s.ptr(), s.bytes()); err != nil {
		return fmt.Errorf("cuda: CopyOut: %w", err)
	}
	return nil
}

// Sync waits for every issued op and reports the first device error.
func (be *Backend) Sync() error {
	if be.closed {
		return errors.New("cuda: Sync: backend is closed")
	}
	if err := be.g.sync(); err != nil {
		return fmt.Errorf("cuda: Sync: %w", err)
	}
	return nil
}

// bf16FromF32 rounds to the nearest bfloat16, ties to even; NaN stays NaN.
func bf16FromF32(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func f32FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// anyBuf resolves a required buffer of this backend, of any dtype.
func (be *Backend) anyBuf(op, arg string, b kernels.Buffer) (*Buffer, error) {
	if be.closed {
		return nil, fmt.Errorf("cuda: %s: backend is closed", op)
	}
	switch cb := b.(type) {
	case *Buffer:
		if cb == nil {
			return nil, fmt.Errorf("cuda: %s: %s is nil", op, arg)
		}
		if cb.a.be != be {
			return nil, fmt.Errorf("cuda: %s: %s belongs to another cuda.Backend", op, arg)
		}
		if cb.a.freed {
			return nil, fmt.Errorf("cuda: %s: %s was freed", op, arg)
		}
		return cb, nil
	case nil:
		return nil, fmt.Errorf("cuda: %s: %s is nil", op, arg)
	default:
		return nil, fmt.Errorf("cuda: %s: %s is a %T from another backend, not a cuda buffer", op, arg, b)
	}
}

// buf resolves a required float32 buffer.
func (be *Backend) buf(op, arg string, b kernels.Buffer) (*Buffer, error) {
	cb, err := be.anyBuf(op, arg, b)
	if err != nil {
		return nil, err
	}
	if cb.a.dt != kernels.F32 {
		return nil, fmt.Errorf("cuda: %s: %s is %v; this op takes f32 buffers", op, arg, cb.a.dt)
	}
	return cb, nil
}

// optBuf is buf for optional arguments (gradient outputs, bias): a nil
// interface or a nil *Buffer gives nil and no error.
func (be *Backend) optBuf(op, arg string, b kernels.Buffer) (*Buffer, error) {
	if b == nil {
		return nil, nil
	}
	if cb, ok := b.(*Buffer); ok && cb == nil {
		return nil, nil
	}
	return be.buf(op, arg, b)
}

// optAny is anyBuf for optional arguments: a nil interface or a nil *Buffer
// gives nil and no error.
func (be *Backend) optAny(op, arg string, b kernels.Buffer) (*Buffer, error) {
	if isNilBuffer(b) {
		return nil, nil
	}
	return be.anyBuf(op, arg, b)
}

// dtMask is the dt argument of a kernel whose "void *" parameters may be
// float32 or bfloat16 (common.cuh, pt_ld): bit k is set when params[k], the
// buffer passed as the kernel's parameter k, is bf16. Entries that are not
// buffers of such parameters are nil.
func dtMask(params ...*Buffer) int32 {
	var m int32
	for k, b := range params {
		if b != nil && b.a.dt == kernels.BF16 {
			m |= 1 << k
		}
	}
	return m
}

// wantLen checks one buffer length against its shape.
func wantLen(op, arg string, b *Buffer, want int, shape string) error {
	if b.n != want {
		return fmt.Errorf("cuda: %s: %s has %d elements, want %s=%d", op, arg, b.n, shape, want)
	}
	return nil
}

// numel multiplies non-negative sizes, failing on a negative size or an
// overflow.
func numel(op, names string, dims ...int) (int, error) {
	p := 1
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("cuda: %s: negative size in (%s) = %v", op, names, dims)
		}
		if d != 0 && p > (1<<62)/d {
			return 0, fmt.Errorf("cuda: %s: (%s) = %v: shape product overflows", op, names, dims)
		}
		p *= d
	}
	return p, nil
}

// fitInt32 checks sizes that kernels take as int.
func fitInt32(op, names string, dims ...int) error {
	for _, d := range dims {
		if d < 0 || d > math.MaxInt32 {
			return fmt.Errorf("cuda: %s: (%s) = %v: each must be in [0, 2^31)", op, names, dims)
		}
	}
	return nil
}

// scratch is a growable device buffer owned by the Backend.
type scratch struct {
	ptr   uint64
	bytes int
}

// ensure makes the scratch at least bytes long. Growing waits for the
// stream first: queued kernels may still read the old memory.
func (s *scratch) ensure(g gpu, bytes int) (uint64, error) {
	if bytes <= s.bytes {
		return s.ptr, nil
	}
	if s.ptr != 0 {
		if err := g.sync(); err != nil {
			return 0, err
		}
		g.free(s.ptr)
		s.ptr, s.bytes = 0, 0
	}
	// Exactly what is asked (at least 4 KiB), not a doubling: the memory
	// estimator's figure must stay an upper bound when micro-batches of
	// different lengths come one after the other. A scratch is reallocated
	// only when a request exceeds every earlier one, so a run of growing
	// lengths costs a few reallocations, once.
	n := max(bytes, 4096)
	p, err := g.alloc(n)
	if err != nil {
		return 0, err
	}
	s.ptr, s.bytes = p, n
	return p, nil
}

func (s *scratch) release(g gpu) {
	if s.ptr != 0 {
		g.free(s.ptr)
		s.ptr, s.bytes = 0, 0
	}
}

// uploadInts copies v into the int scratch and returns its device address.
// The copy is ordered on the stream after every kernel issued before, so
// reusing the scratch for the next op's ints is safe.
func (be *Backend) uploadInts(op string, v []int32) (uint64, error) {
	if len(v) == 0 {
		return 0, nil
	}
	p, err := be.ints.ensure(be.g, 4*len(v))
	if err != nil {
		return 0, fmt.Errorf("cuda: %s: %w", op, err)
	}
	if err := be.g.htod(p, unsafe.Pointer(&v[0]), 4*len(v)); err != nil {
		return 0, fmt.Errorf("cuda: %s: upload %d ints: %w", op, len(v), err)
	}
	return p, nil
}

// blockSize is the thread count of the 1-D kernels (a multiple of 32).
const blockSize = 256

// grid1 is the grid of a grid-stride kernel over n elements: one thread
// per element up to a cap, after which threads loop.
func grid1(n int) [3]uint32 {
	b := (n + blockSize - 1) / blockSize
	return [3]uint32{uint32(min(b, 1<<16)), 1, 1}
}

var block1 = [3]uint32{blockSize, 1, 1}

// launch checks the arguments against the kernel's declaration in its .cu
// source and launches it. A grid with a zero dimension launches nothing.
func (be *Backend) launch(op, kernel string, grid, block [3]uint32, smem int, args ...kernelArg) error {
	k := be.fns[kernel]
	if k == nil {
		return fmt.Errorf("cuda: %s: no kernel %s loaded", op, kernel)
	}
	if len(args) != len(k.sig.kinds) {
		return fmt.Errorf("cuda: %s: kernel %s takes %d arguments (%v), launched with %d", op, kernel, len(k.sig.kinds), k.sig.params, len(args))
	}
	for i, a := range args {
		if a.kind != k.sig.kinds[i] {
			return fmt.Errorf("cuda: %s: kernel %s argument %d (%s) is a %v, launched with a %v", op, kernel, i, k.sig.params[i], k.sig.kinds[i], a.kind)
		}
	}
	if grid[0] == 0 || grid[1] == 0 || grid[2] == 0 {
		return nil
	}
	if err := be.g.launch(k, grid, block, smem, args); err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	return nil
}

// sgemmRowMajor computes, on row-major matrices,
//
//	C[M,N] = alpha·op(A)·op(B) + beta·C,  op(X) = Xᵀ when its flag is set,
//
// with row strides lda, ldb, ldc (elements). cuBLAS is column-major, and a
// row-major matrix X with row stride ld is, read column-major with leading
// dimension ld, exactly Xᵀ. So the row-major product C = op(A)·op(B) is the
// column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ: call cuBLAS with the operands
// swapped (B first), M and N swapped, the same transpose flags and the same
// leading dimensions:
//
//	cublas(transB, transA, m=N, n=M, k=K, B, ldb, A, lda, C, ldc)
//
// cuBLAS's own checks then hold: with its m,n,k, op(B-as-col-major) is N×K
// and B's leading dimension is ldb ≥ N (no transpose) or ≥ K (transpose),
// which is what a row-major op(B) of K×N needs of its row stride.
//
// abBF16 says A and B are bfloat16 and cBF16 that C is (accumulation is
// float32 either way: cublasGemmEx with CUDA_R_16BF and CUBLAS_COMPUTE_32F;
// cuBLAS writes a bf16 C only from bf16 A and B).
func (be *Backend) sgemmRowMajor(op string, transA, transB bool, M, N, K int, alpha float32,
	a uint64, lda int, b uint64, ldb int, beta float32, c uint64, ldc int, abBF16, cBF16 bool) error {
	if M == 0 || N == 0 {
		return nil
	}
	if cBF16 && !abBF16 {
		return fmt.Errorf("cuda: %s: internal error: a bf16 GEMM output needs bf16 operands", op)
	}
	if K == 0 {
		// An empty sum: C = beta·C. Callers zero C themselves for beta 0
		// (cuBLAS would reject the zero leading dimensions).
		if beta == 1 {
			return nil
		}
		return fmt.Errorf("cuda: %s: internal error: GEMM with K = 0 and beta %v reached cuBLAS", op, beta)
	}
	if err := fitInt32(op, "M, N, K, lda, ldb, ldc", M, N, K, lda, ldb, ldc); err != nil {
		return err
	}
	err := be.g.gemm(gemmCall{
		transA: transB, transB: transA,
		m: N, n: M, k: K,
		alpha: alpha, beta: beta,
		a: b, lda: ldb,
		b: a, ldb: lda,
		c: c, ldc: ldc,
		tf32:   be.tf32,
		abBF16: abBF16,
		cBF16:  cBF16,
	})
	if err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	return nil
}

// ptrOf is the address of a non-empty slice's first element.
func ptrOf[T any](s []T) unsafe.Pointer { return unsafe.Pointer(&s[0]) }

// Handles returns the CUcontext and CUstream the backend runs on (0, 0 for a
// backend without a real device), so that a collective can enqueue on the
// same stream and need no extra synchronisation.
func (be *Backend) Handles() (context, stream uintptr) {
	if g, ok := be.g.(*cudaGPU); ok {
		return g.handles()
	}
	return 0, 0
}

// DevicePtr is the buffer's device address (what NCCL reads and writes).
func (b *Buffer) DevicePtr() uintptr { return uintptr(b.ptr()) }
