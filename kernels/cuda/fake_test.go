package cuda

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"go.uber.org/zap"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/kerneltest"
)

// The fake GPU runs the Backend's host code (shape checks, views and
// offsets, argument packing checked against the .cu declarations, scratch
// management, the row-major → column-major GEMM mapping) on machines
// without a GPU. Device memory is host memory behind fake addresses; cuBLAS
// is a plain column-major GEMM with cuBLAS's argument rules; each kernel is
// a Go transcription of its .cu source. The attention kernels are
// transcribed with their block/warp/tile structure (shared-memory tiles,
// lanes, shuffles as array reads), so the suite also exercises their
// indexing; the simpler kernels are transcribed per element.
//
// What it cannot check: the CUDA C++ itself compiling to what the
// transcription says (TestNVRTCCompileAllKernels compiles it; the GPU run
// of kerneltest checks the rest), races, and barriers.

type fakeAlloc struct {
	base uint64
	mem  []byte
}

type fakeGPU struct {
	t      testing.TB
	next   uint64
	allocs []*fakeAlloc // sorted by base
	gemms  []gemmCall   // every cuBLAS call, for mapping tests
	live   int
	// liveBytes and peakBytes: device memory in use now and at most (what
	// the memory estimator predicts).
	liveBytes, peakBytes int
}

func newFakeGPU(t testing.TB) *fakeGPU { return &fakeGPU{t: t, next: 1 << 32} }

func (f *fakeGPU) alloc(bytes int) (uint64, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("fake cuMemAlloc(%d): CUDA_ERROR_INVALID_VALUE", bytes)
	}
	a := &fakeAlloc{base: f.next, mem: make([]byte, bytes)}
	// 256-byte aligned like cuMemAlloc, with a gap so that an overrun is
	// an unmapped address, not the next allocation.
	f.next += uint64((bytes+255)/256*256) + 4096
	f.allocs = append(f.allocs, a)
	f.live++
	f.liveBytes += bytes
	f.peakBytes = max(f.peakBytes, f.liveBytes)
	return a.base, nil
}

func (f *fakeGPU) find(p uint64) (*fakeAlloc, int) {
	i := sort.Search(len(f.allocs), func(i int) bool { return f.allocs[i].base > p }) - 1
	if i < 0 || p >= f.allocs[i].base+uint64(len(f.allocs[i].mem)) {
		return nil, 0
	}
	return f.allocs[i], int(p - f.allocs[i].base)
}

// bytesAt returns n bytes of device memory at p; an access outside an
// allocation is a test failure (a real GPU would fault or corrupt memory).
func (f *fakeGPU) bytesAt(p uint64, n int) []byte {
	a, off := f.find(p)
	if a == nil || off+n > len(a.mem) {
		panic(fmt.Sprintf("fake GPU: access of %d bytes at %#x is outside every allocation", n, p))
	}
	return a.mem[off : off+n]
}

func (f *fakeGPU) f32s(p uint64, n int) []float32 {
	if n == 0 {
		return nil
	}
	b := f.bytesAt(p, 4*n)
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
}

func (f *fakeGPU) f64s(p uint64, n int) []float64 {
	b := f.bytesAt(p, 8*n)
	return unsafe.Slice((*float64)(unsafe.Pointer(&b[0])), n)
}

func (f *fakeGPU) u16s(p uint64, n int) []uint16 {
	if n == 0 {
		return nil
	}
	b := f.bytesAt(p, 2*n)
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), n)
}

func (f *fakeGPU) i32s(p uint64, n int) []int32 {
	if n == 0 {
		return nil
	}
	b := f.bytesAt(p, 4*n)
	return unsafe.Slice((*int32)(unsafe.Pointer(&b[0])), n)
}

func (f *fakeGPU) free(p uint64) error {
	for i, a := range f.allocs {
		if a.base == p {
			f.allocs = append(f.allocs[:i], f.allocs[i+1:]...)
			f.live--
			f.liveBytes -= len(a.mem)
			return nil
		}
	}
	return fmt.Errorf("fake cuMemFree(%#x): not an allocation", p)
}

func (f *fakeGPU) htod(dst uint64, src unsafe.Pointer, bytes int) error {
	copy(f.bytesAt(dst, bytes), unsafe.Slice((*byte)(src), bytes))
	return nil
}

func (f *fakeGPU) dtoh(dst unsafe.Pointer, src uint64, bytes int) error {
	copy(unsafe.Slice((*byte)(dst), bytes), f.bytesAt(src, bytes))
	return nil
}

func (f *fakeGPU) dtod(dst, src uint64, bytes int) error {
	d, s := f.bytesAt(dst, bytes), f.bytesAt(src, bytes)
	if &d[0] != &s[0] && overlapBytes(d, s) {
		return fmt.Errorf("fake cuMemcpyDtoD: overlapping ranges (undefined on a GPU)")
	}
	copy(d, s)
	return nil
}

func overlapBytes(a, b []byte) bool {
	a0, b0 := uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&b[0]))
	return a0 < b0+uintptr(len(b)) && b0 < a0+uintptr(len(a))
}

func (f *fakeGPU) memsetD32(dst uint64, v uint32, n int) error {
	if dst%4 != 0 {
		return fmt.Errorf("fake cuMemsetD32: unaligned address %#x", dst)
	}
	b := f.bytesAt(dst, 4*n)
	u := unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), n)
	for i := range u {
		u[i] = v
	}
	return nil
}

func (f *fakeGPU) memsetD8(dst uint64, v uint8, n int) error {
	b := f.bytesAt(dst, n)
	for i := range b {
		b[i] = v
	}
	return nil
}

func (f *fakeGPU) sync() error  { return nil }
func (f *fakeGPU) close() error { return nil }

// gemm is cuBLAS's column-major GEMM with its argument checks
// (cublas_api.h / the cuBLAS docs: lda >= max(1, rows of A as stored)).
func (f *fakeGPU) gemm(g gemmCall) error {
	f.gemms = append(f.gemms, g)
	if g.batch > 0 {
		// cublasGemmStridedBatchedEx: batch GEMMs on strided operands.
		ab, cb := uint64(4), uint64(4)
		if g.abBF16 {
			ab = 2
		}
		if g.cBF16 {
			cb = 2
		}
		for i := 0; i < g.batch; i++ {
			sub := g
			sub.batch = 0
			sub.a += uint64(int64(i)*g.strideA) * ab
			sub.b += uint64(int64(i)*g.strideB) * ab
			sub.c += uint64(int64(i)*g.strideC) * cb
			if err := f.gemm1(sub); err != nil {
				return err
			}
		}
		return nil
	}
	return f.gemm1(g)
}

// gemm1 is one column-major GEMM.
func (f *fakeGPU) gemm1(g gemmCall) error {
	if g.cBF16 && !g.abBF16 {
		return fmt.Errorf("fake cuBLAS: CUBLAS_STATUS_NOT_SUPPORTED (bf16 C needs bf16 A and B)")
	}
	rowsA, rowsB := g.m, g.k // stored rows (column-major) of A and B
	if g.transA {
		rowsA = g.k
	}
	if g.transB {
		rowsB = g.n
	}
	if g.m < 0 || g.n < 0 || g.k < 0 || g.lda < max(1, rowsA) || g.ldb < max(1, rowsB) || g.ldc < max(1, g.m) {
		return fmt.Errorf("fake cuBLAS: CUBLAS_STATUS_INVALID_VALUE (m=%d n=%d k=%d lda=%d ldb=%d ldc=%d transA=%v transB=%v)",
			g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.transA, g.transB)
	}
	colsA, colsB := g.k, g.n
	if g.transA {
		colsA = g.m
	}
	if g.transB {
		colsB = g.k
	}
	// A and B as float64 getters over float32 or bf16 memory.
	load := func(p uint64, n int) func(i int) float64 {
		if g.abBF16 {
			h := f.u16s(p, n)
			return func(i int) float64 { return float64(f32FromBF16(h[i])) }
		}
		x := f.f32s(p, n)
		return func(i int) float64 { return float64(x[i]) }
	}
	A := load(g.a, (colsA-1)*g.lda+rowsA)
	B := load(g.b, (colsB-1)*g.ldb+rowsB)
	// C as float32 or bf16 memory: read in float32, rounded once when stored.
	nC := (g.n-1)*g.ldc + g.m
	var getC func(i int) float64
	var setC func(i int, v float32)
	if !g.cBF16 {
		c := f.f32s(g.c, nC)
		getC, setC = func(i int) float64 { return float64(c[i]) }, func(i int, v float32) { c[i] = v }
	} else {
		h := f.u16s(g.c, nC)
		getC, setC = func(i int) float64 { return float64(f32FromBF16(h[i])) }, func(i int, v float32) { h[i] = bf16FromF32(v) }
	}
	a := func(i, l int) float64 { // op(A)[i, l]
		if g.transA {
			return A(i*g.lda + l)
		}
		return A(l*g.lda + i)
	}
	b := func(l, j int) float64 { // op(B)[l, j]
		if g.transB {
			return B(l*g.ldb + j)
		}
		return B(j*g.ldb + l)
	}
	for j := 0; j < g.n; j++ {
		for i := 0; i < g.m; i++ {
			var s float64
			for l := 0; l < g.k; l++ {
				s += a(i, l) * b(l, j)
			}
			ci := j*g.ldc + i
			if g.beta == 0 {
				setC(ci, float32(float64(g.alpha)*s))
			} else {
				setC(ci, float32(float64(g.alpha)*s+float64(g.beta)*getC(ci)))
			}
		}
	}
	return nil
}

// launch runs the kernel's Go transcription.
func (f *fakeGPU) launch(k *kernelFn, grid, block [3]uint32, smem int, args []kernelArg) error {
	impl := fakeKernels[k.sig.name]
	if impl == nil {
		return fmt.Errorf("fake GPU: kernel %s has no transcription", k.sig.name)
	}
	if block[0]%32 != 0 || block[0] > 1024 || block[1] != 1 || block[2] != 1 {
		return fmt.Errorf("fake GPU: kernel %s: block %v (want a multiple of 32, at most 1024, 1-D)", k.sig.name, block)
	}
	if grid[1] > 65535 || grid[2] > 65535 {
		return fmt.Errorf("fake GPU: kernel %s: grid %v beyond the y/z limit", k.sig.name, grid)
	}
	impl(&fakeLaunch{f: f, grid: grid, block: block, smem: smem, args: args})
	return nil
}

// fakeLaunch gives a transcription its launch configuration and arguments.
type fakeLaunch struct {
	f           *fakeGPU
	grid, block [3]uint32
	smem        int
	args        []kernelArg
}

func (l *fakeLaunch) p(i int) uint64   { return l.args[i].bits }
func (l *fakeLaunch) i(i int) int      { return int(int32(uint32(l.args[i].bits))) }
func (l *fakeLaunch) l(i int) int      { return int(int64(l.args[i].bits)) }
func (l *fakeLaunch) u(i int) uint64   { return l.args[i].bits }
func (l *fakeLaunch) fl(i int) float32 { return math.Float32frombits(uint32(l.args[i].bits)) }

// F returns n floats at argument i (nil for a NULL pointer).
func (l *fakeLaunch) F(i, n int) []float32 {
	if l.p(i) == 0 {
		return nil
	}
	return l.f.f32s(l.p(i), n)
}

// fakeVec is a kernel argument that may be float32 or bf16 (common.cuh's
// pt_ld/pt_st): loads widen, stores round to nearest even.
type fakeVec struct {
	f []float32
	h []uint16
}

func (v fakeVec) isNil() bool { return v.f == nil && v.h == nil }

func (v fakeVec) at(i int) float32 {
	if v.h != nil {
		return f32FromBF16(v.h[i])
	}
	return v.f[i]
}

func (v fakeVec) set(i int, x float32) {
	if v.h != nil {
		v.h[i] = bf16FromF32(x)
	} else {
		v.f[i] = x
	}
}

// V returns n elements at argument i, bf16 when bit i of the launch's dtype
// mask (argument dtArg) is set; the zero fakeVec for a NULL pointer.
func (l *fakeLaunch) V(i, n, dtArg int) fakeVec {
	if l.p(i) == 0 {
		return fakeVec{}
	}
	if l.i(dtArg)>>i&1 == 1 {
		return fakeVec{h: l.f.u16s(l.p(i), n)}
	}
	return fakeVec{f: l.f.f32s(l.p(i), n)}
}

// threads is the total thread count of a 1-D launch (grid-stride kernels
// cover [0, n) with it whatever n is, as PT_FOR does).
func (l *fakeLaunch) threads() int { return int(l.grid[0]) * int(l.block[0]) }

// forEach runs body for i in [0, n), checking that the launch has at least
// one thread (a zero grid would do nothing on a GPU).
func (l *fakeLaunch) forEach(n int, body func(i int)) {
	if l.threads() == 0 {
		panic("fake GPU: empty launch")
	}
	for i := 0; i < n; i++ {
		body(i)
	}
}

var fakeKernels map[string]func(l *fakeLaunch)

func init() {
	fakeKernels = map[string]func(l *fakeLaunch){
		// elementwise.cu
		"pt_add": func(l *fakeLaunch) {
			n := l.l(3)
			out, a, b := l.V(0, n, 4), l.V(1, n, 4), l.V(2, n, 4)
			l.forEach(n, func(i int) { out.set(i, a.at(i)+b.at(i)) })
		},
		"pt_scale": func(l *fakeLaunch) {
			n := l.l(2)
			x, s := l.F(0, n), l.fl(1)
			l.forEach(n, func(i int) { x[i] *= s })
		},
		"pt_bias_add": func(l *fakeLaunch) {
			rows, cols := l.l(2), l.i(3)
			out, bias := l.F(0, rows*cols), l.F(1, cols)
			l.forEach(rows*cols, func(i int) { out[i] += bias[i%cols] })
		},
		"pt_col_sums": func(l *fakeLaunch) {
			rows, cols := l.i(2), l.i(3)
			dst, src := l.F(0, cols), l.F(1, rows*cols)
			l.forEach(cols, func(c int) {
				acc := 0.0
				for r := 0; r < rows; r++ {
					acc += float64(src[r*cols+c])
				}
				dst[c] += float32(acc)
			})
		},
		// embedding.cu
		"pt_embedding": func(l *fakeLaunch) {
			ntok, dim := l.l(3), l.i(4)
			out, tok := l.F(0, ntok*dim), l.f.i32s(l.p(2), ntok)
			l.forEach(ntok*dim, func(e int) {
				i, d := e/dim, e%dim
				out[e] = l.f.f32s(l.p(1)+uint64(4*(int(tok[i])*dim+d)), 1)[0]
			})
		},
		"pt_embedding_bf16": func(l *fakeLaunch) {
			ntok, dim := l.l(3), l.i(4)
			out, tok := l.F(0, ntok*dim), l.f.i32s(l.p(2), ntok)
			l.forEach(ntok*dim, func(e int) {
				i, d := e/dim, e%dim
				out[e] = f32FromBF16(l.f.u16s(l.p(1)+uint64(2*(int(tok[i])*dim+d)), 1)[0])
			})
		},
		"pt_embedding_bf16_bf16": func(l *fakeLaunch) {
			ntok, dim := l.l(3), l.i(4)
			out, tok := l.f.u16s(l.p(0), ntok*dim), l.f.i32s(l.p(2), ntok)
			l.forEach(ntok*dim, func(e int) {
				i, d := e/dim, e%dim
				out[e] = l.f.u16s(l.p(1)+uint64(2*(int(tok[i])*dim+d)), 1)[0]
			})
		},
		"pt_embedding_backward": func(l *fakeLaunch) {
			ntok, dim := l.i(3), l.i(4)
			dout, tok := l.F(1, ntok*dim), l.f.i32s(l.p(2), ntok)
			l.forEach(dim, func(d int) {
				for i := 0; i < ntok; i++ {
					l.f.f32s(l.p(0)+uint64(4*(int(tok[i])*dim+d)), 1)[0] += dout[i*dim+d]
				}
			})
		},
		// rmsnorm.cu
		"pt_rmsnorm": func(l *fakeLaunch) {
			rows, dim, eps := l.i(4), l.i(5), l.fl(6)
			out, rstd, in, w := l.V(0, rows*dim, 7), l.F(1, rows), l.V(2, rows*dim, 7), l.V(3, dim, 7)
			l.forEach(rows, func(r int) {
				// The whole row is read (the reduction) before any of it
				// is written: out may alias in.
				x := make([]float32, dim)
				var ss float32
				for i := range x {
					x[i] = in.at(r*dim + i)
					ss += x[i] * x[i]
				}
				rs := float32(1 / math.Sqrt(float64(ss)/float64(dim)+float64(eps)))
				rstd[r] = rs
				for i := range x {
					out.set(r*dim+i, x[i]*rs*w.at(i))
				}
			})
		},
		"pt_rmsnorm_backward_dx": func(l *fakeLaunch) {
			rows, dim := l.i(5), l.i(6)
			din, dout, in, w, rstd := l.V(0, rows*dim, 7), l.V(1, rows*dim, 7), l.V(2, rows*dim, 7), l.V(3, dim, 7), l.F(4, rows)
			l.forEach(rows, func(r int) {
				g, x := make([]float32, dim), make([]float32, dim)
				var dot float32
				for i := range g {
					g[i], x[i] = dout.at(r*dim+i), in.at(r*dim+i)
					dot += g[i] * w.at(i) * x[i]
				}
				rs := rstd[r]
				coef := float32(float64(rs) * float64(rs) * float64(rs) * float64(dot) / float64(dim))
				for i := range g {
					d := din.at(r*dim + i)
					d += rs*w.at(i)*g[i] - x[i]*coef
					din.set(r*dim+i, d)
				}
			})
		},
		"pt_rmsnorm_backward_dw": func(l *fakeLaunch) {
			rows, dim := l.i(4), l.i(5)
			dw, dout, in, rstd := l.F(0, dim), l.V(1, rows*dim, 6), l.V(2, rows*dim, 6), l.F(3, rows)
			l.forEach(dim, func(i int) {
				acc := 0.0
				for r := 0; r < rows; r++ {
					e := r*dim + i
					acc += float64(dout.at(e)) * float64(in.at(e)) * float64(rstd[r])
				}
				dw[i] += float32(acc)
			})
		},
		// rope.cu
		"pt_rope":          func(l *fakeLaunch) { fakeRoPE(l, false) },
		"pt_rope_backward": func(l *fakeLaunch) { fakeRoPE(l, true) },
		// swiglu.cu
		"pt_swiglu": func(l *fakeLaunch) {
			n := l.l(3)
			out, gate, up := l.V(0, n, 4), l.V(1, n, 4), l.V(2, n, 4)
			l.forEach(n, func(i int) {
				x := gate.at(i)
				out.set(i, x/(1+expf(-x))*up.at(i))
			})
		},
		"pt_swiglu_backward": func(l *fakeLaunch) {
			n := l.l(5)
			dgate, dup, dout, gate, up := l.V(0, n, 6), l.V(1, n, 6), l.V(2, n, 6), l.V(3, n, 6), l.V(4, n, 6)
			l.forEach(n, func(i int) {
				x := gate.at(i)
				s := 1 / (1 + expf(-x))
				g := dout.at(i)
				if !dgate.isNil() {
					dgate.set(i, dgate.at(i)+g*up.at(i)*(s+x*s*(1-s)))
				}
				if !dup.isNil() {
					dup.set(i, dup.at(i)+g*x*s)
				}
			})
		},
		// dropout.cu
		"pt_dropout": func(l *fakeLaunch) {
			n, seed, th, inv := l.l(2), l.u(3), l.u(4), l.fl(5)
			out, in := l.V(0, n, 6), l.V(1, n, 6)
			l.forEach(n, func(i int) {
				v := float32(0)
				if fakeDropoutKeep(seed, i, th) {
					v = in.at(i) * inv
				}
				out.set(i, v)
			})
		},
		"pt_dropout_backward": func(l *fakeLaunch) {
			n, seed, th, inv, all := l.l(2), l.u(3), l.u(4), l.fl(5), l.i(6)
			din, dout := l.V(0, n, 7), l.V(1, n, 7)
			l.forEach(n, func(i int) {
				if all != 0 || fakeDropoutKeep(seed, i, th) {
					din.set(i, din.at(i)+dout.at(i)*inv)
				}
			})
		},
		// cross_entropy.cu
		"pt_cross_entropy": func(l *fakeLaunch) {
			rows, vocab, gs := l.i(4), l.i(5), l.fl(6)
			losses, dl, x, tg := l.F(0, rows), l.F(1, rows*vocab), l.F(2, rows*vocab), l.f.i32s(l.p(3), rows)
			l.forEach(rows, func(r int) {
				xr := x[r*vocab : (r+1)*vocab]
				var d []float32
				if dl != nil {
					d = dl[r*vocab : (r+1)*vocab]
				}
				t := int(tg[r])
				if t == kernels.IgnoreIndex {
					losses[r] = 0
					clear(d)
					return
				}
				xt := xr[t]
				mx := float32(math.Inf(-1))
				for _, v := range xr {
					mx = max(mx, v)
				}
				var sum float32
				for _, v := range xr {
					sum += expf(v - mx)
				}
				losses[r] = float32(float64(mx) + math.Log(float64(sum)) - float64(xt))
				if d != nil {
					fs := gs / sum
					for j := range d {
						v := expf(xr[j]-mx) * fs
						if j == t {
							v -= gs
						}
						d[j] = v
					}
				}
			})
		},
		// adamw.cu
		"pt_adamw": func(l *fakeLaunch) {
			n := l.l(4)
			p, g, m, v := l.F(0, n), l.F(1, n), l.F(2, n), l.F(3, n)
			lr, b1, b2, c1, c2, inv1, inv2, eps, wd, gs := l.fl(5), l.fl(6), l.fl(7), l.fl(8), l.fl(9), l.fl(10), l.fl(11), l.fl(12), l.fl(13), l.fl(14)
			l.forEach(n, func(i int) {
				gi := g[i] * gs
				mi := b1*m[i] + c1*gi
				vi := b2*v[i] + c2*gi*gi
				m[i], v[i] = mi, vi
				den := float32(math.Sqrt(float64(vi*inv2))) + eps
				p[i] = p[i] - lr*(mi*inv1/den+wd*p[i])
			})
		},
		// sumsquares.cu: the partial sums follow the grid-stride order of
		// each thread exactly (thread sums, then the block reduction).
		"pt_sumsq_partial": func(l *fakeLaunch) {
			n := l.l(2)
			in := l.F(1, n)
			part := l.f.f64s(l.p(0), int(l.grid[0]))
			nt, bd := l.threads(), int(l.block[0])
			for b := 0; b < int(l.grid[0]); b++ {
				acc := 0.0
				for t := 0; t < bd; t++ {
					for i := b*bd + t; i < n; i += nt {
						acc += float64(in[i]) * float64(in[i])
					}
				}
				part[b] = acc
			}
		},
		"pt_sumsq_final": func(l *fakeLaunch) {
			np := l.i(2)
			out, part := l.F(0, 1), l.f.f64s(l.p(1), np)
			acc := 0.0
			for _, v := range part {
				acc += v
			}
			out[0] = float32(acc)
		},
		// attention.cu
		"pt_attention_fwd":     fakeAttentionFwd,
		"pt_attention_dsum":    fakeAttentionDsum,
		"pt_attention_bwd_dq":  fakeAttentionDQ,
		"pt_attention_bwd_dkv": fakeAttentionDKV,
		// attention_gemm.cu
		"pt_attn_softmax": func(l *fakeLaunch) {
			E, T, H, b, j, kv0, g := l.i(2), l.i(3), l.i(4), l.i(5), l.i(6), l.i(7), l.i(8)
			s := l.F(0, E*T*T)
			l.forEach(E*T, func(r int) {
				e, i := r/T, r%T
				row := s[r*T : (r+1)*T]
				m := float32(math.Inf(-1))
				for c := 0; c <= i; c++ {
					m = max(m, row[c])
				}
				var sum float32
				for c := 0; c <= i; c++ {
					sum += expf(row[c] - m)
				}
				lv := m + float32(math.Log(float64(sum)))
				for c := range row {
					if c <= i {
						row[c] = expf(row[c] - lv)
					} else {
						row[c] = 0
					}
				}
				h := (kv0+e)*g + j
				l.f.f32s(l.p(1)+uint64(4*((b*H+h)*T+i)), 1)[0] = lv
			})
		},
		"pt_attn_probs": func(l *fakeLaunch) {
			E, T, H, b, j, kv0, g := l.i(2), l.i(3), l.i(4), l.i(5), l.i(6), l.i(7), l.i(8)
			s := l.F(0, E*T*T)
			l.forEach(E*T*T, func(x int) {
				r, c := x/T, x%T
				e, i := r/T, r%T
				if c > i {
					s[x] = 0
					return
				}
				h := (kv0+e)*g + j
				s[x] = expf(s[x] - l.f.f32s(l.p(1)+uint64(4*((b*H+h)*T+i)), 1)[0])
			})
		},
		"pt_attn_dscores": func(l *fakeLaunch) {
			E, T, H, b, j, kv0, g := l.i(3), l.i(4), l.i(5), l.i(6), l.i(7), l.i(8), l.i(9)
			dp, p := l.F(0, E*T*T), l.F(1, E*T*T)
			l.forEach(E*T*T, func(x int) {
				r, c := x/T, x%T
				e, i := r/T, r%T
				if c > i {
					dp[x] = 0
					return
				}
				h := (kv0+e)*g + j
				dp[x] = p[x] * (dp[x] - l.f.f32s(l.p(2)+uint64(4*((b*H+h)*T+i)), 1)[0])
			})
		},
		"pt_cvt_f32_to_bf16": func(l *fakeLaunch) {
			n := l.l(2)
			out, in := l.f.u16s(l.p(0), n), l.F(1, n)
			l.forEach(n, func(i int) { out[i] = bf16FromF32(in[i]) })
		},
		"pt_cvt_bf16_to_f32": func(l *fakeLaunch) {
			n := l.l(2)
			out, in := l.F(0, n), l.f.u16s(l.p(1), n)
			l.forEach(n, func(i int) { out[i] = f32FromBF16(in[i]) })
		},
	}
}

func expf(x float32) float32 { return float32(math.Exp(float64(x))) }

func fakeDropoutKeep(seed uint64, i int, threshold uint64) bool {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return z>>40 >= threshold
}

func fakeRoPE(l *fakeLaunch, backward bool) {
	rows, heads, headDim := l.i(5), l.i(6), l.i(7)
	half := headDim / 2
	n := rows * heads * headDim
	out, in, pos := l.V(0, n, 8), l.V(1, n, 8), l.f.i32s(l.p(2), rows)
	l.forEach(rows*heads*half, func(e int) {
		rh, j := e/half, e%half
		r := rh / heads
		t := int(pos[r])*half + j
		c, s := l.f.f32s(l.p(3)+uint64(4*t), 1)[0], l.f.f32s(l.p(4)+uint64(4*t), 1)[0]
		base := rh * headDim
		a, b := in.at(base+j), in.at(base+j+half)
		if backward {
			d0, d1 := out.at(base+j), out.at(base+j+half)
			out.set(base+j, d0+(a*c+b*s))
			out.set(base+j+half, d1+(b*c-a*s))
		} else {
			out.set(base+j, a*c-b*s)
			out.set(base+j+half, b*c+a*s)
		}
	})
}

// Transcriptions of attention.cu. Each block runs its phases in order
// (what __syncthreads separates); within a phase, each warp's 32 lanes are
// arrays indexed by lane, warp reductions are sums/maxima over them and
// __shfl_sync(x, t) is x[t].
const (
	fkWarps = 8
	fkTile  = 32
	fkMaxR  = 8
)

func fakeCheckAttnLaunch(l *fakeLaunch, D, smemWant int) {
	if l.block[0] != 32*fkWarps {
		panic(fmt.Sprintf("attention launched with block %v, the kernel assumes %d threads", l.block, 32*fkWarps))
	}
	if l.smem != smemWant {
		panic(fmt.Sprintf("attention launched with %d bytes of shared memory, the kernel uses %d for D=%d", l.smem, smemWant, D))
	}
	if D > 32*fkMaxR {
		panic("D beyond PT_AT_MAXR")
	}
}

func warpMax(x *[32]float32) float32 {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	return m
}

func warpSum(x *[32]float32) float32 {
	var s float32
	for _, v := range x {
		s += v
	}
	return s
}

func fakeAttentionFwd(l *fakeLaunch) {
	T, H, KV, D, scale := l.i(5), l.i(6), l.i(7), l.i(8), l.fl(9)
	B := int(l.grid[2])
	if int(l.grid[1]) != H {
		panic("attention fwd: grid.y != H")
	}
	fakeCheckAttnLaunch(l, D, 4*(2*fkTile*(D+1)+fkWarps*D))
	out, lse := l.F(0, B*T*H*D), l.F(1, B*H*T)
	q, k, v := l.F(2, B*T*H*D), l.F(3, B*T*KV*D), l.F(4, B*T*KV*D)
	ld, ldq, ldk := D+1, H*D, KV*D
	Ks, Vs := make([]float32, fkTile*ld), make([]float32, fkTile*ld)
	Qs := make([]float32, fkWarps*D)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			for bx := 0; bx < int(l.grid[0]); bx++ {
				i0 := bx * fkWarps
				iLast := min(T, i0+fkWarps) - 1
				qb, kb, vb := b*T*ldq+h*D, b*T*ldk+g*D, b*T*ldk+g*D
				var m, ll [fkWarps]float32
				var acc [fkWarps][32][fkMaxR]float32
				for w := 0; w < fkWarps; w++ {
					i := i0 + w
					for d := 0; d < D; d++ {
						Qs[w*D+d] = 0
						if i < T {
							Qs[w*D+d] = q[qb+i*ldq+d]
						}
					}
					m[w] = float32(math.Inf(-1))
				}
				for j0 := 0; j0 <= iLast; j0 += fkTile {
					for e := 0; e < fkTile*D; e++ {
						t, d := e/D, e%D
						j := j0 + t
						var kv, vv float32
						if j < T {
							kv, vv = k[kb+j*ldk+d], v[vb+j*ldk+d]
						}
						Ks[t*ld+d], Vs[t*ld+d] = kv, vv
					}
					for w := 0; w < fkWarps; w++ {
						i := i0 + w
						if !(i < T && j0 <= i) {
							continue
						}
						var s, p [32]float32
						for lane := 0; lane < 32; lane++ {
							j := j0 + lane
							s[lane] = float32(math.Inf(-1))
							if j <= i {
								var dot float32
								for d := 0; d < D; d++ {
									dot += Qs[w*D+d] * Ks[lane*ld+d]
								}
								s[lane] = dot * scale
							}
						}
						mNew := max(m[w], warpMax(&s))
						for lane := 0; lane < 32; lane++ {
							if j0+lane <= i {
								p[lane] = expf(s[lane] - mNew)
							}
						}
						alpha := expf(m[w] - mNew)
						ll[w] = ll[w]*alpha + warpSum(&p)
						m[w] = mNew
						nt := min(fkTile, i-j0+1)
						for lane := 0; lane < 32; lane++ {
							for r := 0; r < fkMaxR; r++ {
								acc[w][lane][r] *= alpha
							}
							for t := 0; t < nt; t++ {
								for r := 0; r < fkMaxR; r++ {
									if d := lane + 32*r; d < D {
										acc[w][lane][r] += p[t] * Vs[t*ld+d]
									}
								}
							}
						}
					}
				}
				for w := 0; w < fkWarps; w++ {
					i := i0 + w
					if i >= T {
						continue
					}
					inv := 1 / ll[w]
					for lane := 0; lane < 32; lane++ {
						for r := 0; r < fkMaxR; r++ {
							if d := lane + 32*r; d < D {
								out[b*T*ldq+i*ldq+h*D+d] = acc[w][lane][r] * inv
							}
						}
					}
					lse[(b*H+h)*T+i] = m[w] + float32(math.Log(float64(ll[w])))
				}
			}
		}
	}
}

func fakeAttentionDsum(l *fakeLaunch) {
	B, T, H, D := l.i(3), l.i(4), l.i(5), l.i(6)
	dsum, dout, out := l.F(0, B*H*T), l.F(1, B*T*H*D), l.F(2, B*T*H*D)
	wpb := int(l.block[0]) / 32
	if int(l.grid[0])*wpb < 1 {
		panic("dsum: empty launch")
	}
	for row := 0; row < B*T*H; row++ {
		acc := 0.0
		for d := 0; d < D; d++ {
			acc += float64(dout[row*D+d]) * float64(out[row*D+d])
		}
		h := row % H
		bi := row / H
		i, b := bi%T, bi/T
		dsum[(b*H+h)*T+i] = float32(acc)
	}
}

func fakeAttentionDQ(l *fakeLaunch) {
	T, H, KV, D, scale := l.i(7), l.i(8), l.i(9), l.i(10), l.fl(11)
	B := int(l.grid[2])
	fakeCheckAttnLaunch(l, D, 4*(2*fkTile*(D+1)+2*fkWarps*D))
	dq, dout, q := l.F(0, B*T*H*D), l.F(1, B*T*H*D), l.F(2, B*T*H*D)
	k, v := l.F(3, B*T*KV*D), l.F(4, B*T*KV*D)
	lse, dsum := l.F(5, B*H*T), l.f.f32s(l.p(6), B*H*T)
	ld, ldq, ldk := D+1, H*D, KV*D
	Ks, Vs := make([]float32, fkTile*ld), make([]float32, fkTile*ld)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			for bx := 0; bx < int(l.grid[0]); bx++ {
				i0 := bx * fkWarps
				iLast := min(T, i0+fkWarps) - 1
				kb, vb := b*T*ldk+g*D, b*T*ldk+g*D
				var acc [fkWarps][32][fkMaxR]float32
				for j0 := 0; j0 <= iLast; j0 += fkTile {
					for e := 0; e < fkTile*D; e++ {
						t, d := e/D, e%D
						j := j0 + t
						var kv, vv float32
						if j < T {
							kv, vv = k[kb+j*ldk+d], v[vb+j*ldk+d]
						}
						Ks[t*ld+d], Vs[t*ld+d] = kv, vv
					}
					for w := 0; w < fkWarps; w++ {
						i := i0 + w
						if !(i < T && j0 <= i) {
							continue
						}
						qoff := b*T*ldq + i*ldq + h*D
						li := (b*H+h)*T + i
						Li, Di := lse[li], dsum[li]
						var ds [32]float32
						for lane := 0; lane < 32; lane++ {
							if j0+lane <= i {
								var s, dp float32
								for d := 0; d < D; d++ {
									s += q[qoff+d] * Ks[lane*ld+d]
									dp += dout[qoff+d] * Vs[lane*ld+d]
								}
								p := expf(s*scale - Li)
								ds[lane] = p * (dp - Di)
							}
						}
						nt := min(fkTile, i-j0+1)
						for lane := 0; lane < 32; lane++ {
							for t := 0; t < nt; t++ {
								for r := 0; r < fkMaxR; r++ {
									if d := lane + 32*r; d < D {
										acc[w][lane][r] += ds[t] * Ks[t*ld+d]
									}
								}
							}
						}
					}
				}
				for w := 0; w < fkWarps; w++ {
					i := i0 + w
					if i >= T {
						continue
					}
					qoff := b*T*ldq + i*ldq + h*D
					for lane := 0; lane < 32; lane++ {
						for r := 0; r < fkMaxR; r++ {
							if d := lane + 32*r; d < D {
								dq[qoff+d] += scale * acc[w][lane][r]
							}
						}
					}
				}
			}
		}
	}
}

func fakeAttentionDKV(l *fakeLaunch) {
	T, H, KV, D, scale := l.i(8), l.i(9), l.i(10), l.i(11), l.fl(12)
	B := int(l.grid[2])
	if int(l.grid[1]) != KV {
		panic("attention dkv: grid.y != KV")
	}
	fakeCheckAttnLaunch(l, D, 4*(2*fkTile*(D+1)+2*fkTile+2*fkWarps*D))
	dk, dv := l.F(0, B*T*KV*D), l.F(1, B*T*KV*D)
	dout, q := l.F(2, B*T*H*D), l.F(3, B*T*H*D)
	k, v := l.F(4, B*T*KV*D), l.F(5, B*T*KV*D)
	lse, dsum := l.F(6, B*H*T), l.f.f32s(l.p(7), B*H*T)
	ld, ldq, ldk := D+1, H*D, KV*D
	rep := H / KV
	Qs, dOs := make([]float32, fkTile*ld), make([]float32, fkTile*ld)
	var Ls, Ds [fkTile]float32
	for b := 0; b < B; b++ {
		for g := 0; g < KV; g++ {
			for bx := 0; bx < int(l.grid[0]); bx++ {
				jFirst := bx * fkWarps
				var accK, accV [fkWarps][32][fkMaxR]float32
				for hh := 0; hh < rep; hh++ {
					h := g*rep + hh
					qb, ob := b*T*ldq+h*D, b*T*ldq+h*D
					lb := (b*H + h) * T
					for i0 := jFirst; i0 < T; i0 += fkTile {
						for e := 0; e < fkTile*D; e++ {
							t, d := e/D, e%D
							i := i0 + t
							var qv, ov float32
							if i < T {
								qv, ov = q[qb+i*ldq+d], dout[ob+i*ldq+d]
							}
							Qs[t*ld+d], dOs[t*ld+d] = qv, ov
						}
						for t := 0; t < fkTile; t++ {
							i := i0 + t
							Ls[t], Ds[t] = 0, 0
							if i < T {
								Ls[t], Ds[t] = lse[lb+i], dsum[lb+i]
							}
						}
						for w := 0; w < fkWarps; w++ {
							j := jFirst + w
							if j >= T {
								continue
							}
							koff := b*T*ldk + j*ldk + g*D
							var p, ds [32]float32
							for lane := 0; lane < 32; lane++ {
								i := i0 + lane
								if i < T && i >= j {
									var s, dp float32
									for d := 0; d < D; d++ {
										s += Qs[lane*ld+d] * k[koff+d]
										dp += dOs[lane*ld+d] * v[koff+d]
									}
									p[lane] = expf(s*scale - Ls[lane])
									ds[lane] = p[lane] * (dp - Ds[lane])
								}
							}
							nt := min(fkTile, T-i0)
							for lane := 0; lane < 32; lane++ {
								for t := 0; t < nt; t++ {
									for r := 0; r < fkMaxR; r++ {
										if d := lane + 32*r; d < D {
											accV[w][lane][r] += p[t] * dOs[t*ld+d]
											accK[w][lane][r] += ds[t] * Qs[t*ld+d]
										}
									}
								}
							}
						}
					}
				}
				for w := 0; w < fkWarps; w++ {
					j := jFirst + w
					if j >= T {
						continue
					}
					koff := b*T*ldk + j*ldk + g*D
					for lane := 0; lane < 32; lane++ {
						for r := 0; r < fkMaxR; r++ {
							if d := lane + 32*r; d < D {
								if dk != nil {
									dk[koff+d] += scale * accK[w][lane][r]
								}
								if dv != nil {
									dv[koff+d] += accV[w][lane][r]
								}
							}
						}
					}
				}
			}
		}
	}
}

// newFakeBackend is a Backend on the fake GPU, with every kernel of the
// embedded sources registered under its parsed declaration.
func newFakeBackend(t testing.TB, tf32 bool) (*Backend, *fakeGPU) {
	sigs, err := allKernels()
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeGPU(t)
	be := &Backend{log: zap.NewNop(), g: f, info: &deviceInfo{name: "fake", major: 9, smemOptin: 227 << 10},
		tf32: tf32, name: "cuda/fake", fns: map[string]*kernelFn{}, rope: map[ropeKey]*ropeTable{}}
	for name, s := range sigs {
		be.fns[name] = &kernelFn{sig: s}
	}
	return be, f
}

// TestKernelsOnFakeGPU runs the whole kerneltest suite on the Backend with
// the fake GPU: everything but the CUDA C++ compiler and the hardware.
func TestKernelsOnFakeGPU(t *testing.T) {
	kerneltest.Run(t, func(t *testing.T) kernels.Backend {
		be, f := newFakeBackend(t, false)
		t.Cleanup(func() {
			be.Close()
			if f.live != 0 {
				t.Errorf("%d device allocations leaked (kerneltest frees every buffer; the backend frees its scratch at Close)", f.live)
			}
		})
		return be
	})
}

// TestKernelsOnFakeGPUGEMMAttention runs the suite again with attention
// through batched GEMMs at every length (Options.Attention "gemm"), so the
// path that training lengths take on a GPU is checked here too: strides,
// leading dimensions, GQA grouping, the causal softmax and lse.
func TestKernelsOnFakeGPUGEMMAttention(t *testing.T) {
	kerneltest.Run(t, func(t *testing.T) kernels.Backend {
		be, f := newFakeBackend(t, false)
		be.attn = "gemm"
		// A budget of one head's score pair at the suite's longest length
		// (128): calls cover one kv head each there, several at shorter ones.
		be.attnBudget = 2 * 4 * 128 * 128
		t.Cleanup(func() {
			be.Close()
			if f.live != 0 {
				t.Errorf("%d device allocations leaked", f.live)
			}
			batched := 0
			for _, g := range f.gemms {
				if g.batch > 0 {
					batched++
				}
			}
			if batched == 0 && !t.Skipped() && (strings.HasSuffix(t.Name(), "/Attention") || strings.HasSuffix(t.Name(), "/AttentionBackward")) {
				t.Errorf("no batched GEMM was issued: the GEMM attention path did not run")
			}
		})
		return be
	})
}

// TestMatmulCublasArguments pins the row-major → column-major mapping of the
// three GEMMs of a linear layer to the cuBLAS calls the comments promise.
func TestMatmulCublasArguments(t *testing.T) {
	be, f := newFakeBackend(t, true)
	m, k, n := 3, 5, 7
	alloc := func(n int) kernels.Buffer {
		b, err := be.Alloc(n, kernels.F32)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out, in, w := alloc(m*n), alloc(m*k), alloc(n*k)
	dIn, dW := alloc(m*k), alloc(n*k)
	if err := be.Matmul(out, in, w, nil, m, k, n, 0.5, false); err != nil {
		t.Fatal(err)
	}
	if err := be.MatmulBackward(dIn, dW, nil, out, in, w, m, k, n, 0.5); err != nil {
		t.Fatal(err)
	}
	p := func(b kernels.Buffer) uint64 { return b.(*Buffer).ptr() }
	want := []gemmCall{
		// out = in·wᵀ: cublas(T, N, n, m, k, w, k, in, k, out, n)
		{transA: true, transB: false, m: n, n: m, k: k, alpha: 0.5, beta: 0, a: p(w), lda: k, b: p(in), ldb: k, c: p(out), ldc: n, tf32: true},
		// dIn += dOut·w: cublas(N, N, k, m, n, w, k, dOut, n, dIn, k)
		{transA: false, transB: false, m: k, n: m, k: n, alpha: 0.5, beta: 1, a: p(w), lda: k, b: p(out), ldb: n, c: p(dIn), ldc: k, tf32: true},
		// dW += dOutᵀ·in: cublas(N, T, k, n, m, in, k, dOut, n, dW, k)
		{transA: false, transB: true, m: k, n: n, k: m, alpha: 0.5, beta: 1, a: p(in), lda: k, b: p(out), ldb: n, c: p(dW), ldc: k, tf32: true},
	}
	if len(f.gemms) != len(want) {
		t.Fatalf("%d cuBLAS calls, want %d: %+v", len(f.gemms), len(want), f.gemms)
	}
	for i := range want {
		if f.gemms[i] != want[i] {
			t.Errorf("cuBLAS call %d:\n got %+v\nwant %+v", i, f.gemms[i], want[i])
		}
	}
}

// TestLaunchChecksArguments: a launch whose arguments do not match the
// kernel's declaration in its .cu file is an error, not a GPU fault.
func TestLaunchChecksArguments(t *testing.T) {
	be, _ := newFakeBackend(t, false)
	err := be.launch("Test", "pt_scale", grid1(1), block1, 0, argP(0), argF(1)) // missing n
	if err == nil {
		t.Error("launch with too few arguments: no error")
	}
	err = be.launch("Test", "pt_scale", grid1(1), block1, 0, argP(0), argI(1), argL(1)) // int for float
	if err == nil {
		t.Error("launch with an int for a float: no error")
	}
	if err := be.launch("Test", "pt_nope", grid1(1), block1, 0); err == nil {
		t.Error("launch of an unknown kernel: no error")
	}
}

// TestKernelDeclarations: every kernel's parameters are of a kind the
// launcher packs, and every kernel has a fake transcription.
func TestKernelDeclarations(t *testing.T) {
	sigs, err := allKernels()
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) < 20 {
		t.Errorf("only %d kernels parsed from the sources", len(sigs))
	}
	for name, s := range sigs {
		if fakeKernels[name] == nil {
			t.Errorf("kernel %s (%s.cu) has no fake transcription", name, s.module)
		}
		if len(s.kinds) > maxKernelArgs {
			t.Errorf("kernel %s has %d parameters, the launcher packs at most %d", name, len(s.kinds), maxKernelArgs)
		}
	}
	for name := range fakeKernels {
		if _, ok := sigs[name]; !ok {
			t.Errorf("fake transcription %s has no kernel in the sources", name)
		}
	}
	if _, err := paramKind("double x"); err == nil {
		t.Error("paramKind(double): want an error (the launcher does not pack doubles)")
	}
}

// TestBF16Buffers: bf16 buffers round on CopyIn, read back exactly, zero,
// copy and convert; a compute op on them rounds its float32 result once.
func TestBF16Buffers(t *testing.T) {
	be, _ := newFakeBackend(t, false)
	b, err := be.Alloc(5, kernels.BF16)
	if err != nil {
		t.Fatal(err)
	}
	if b.DType() != kernels.BF16 {
		t.Fatalf("DType %v", b.DType())
	}
	in := []float32{1, 1.00390625, -2.5, 3.14159265, 1e-3}
	if err := be.CopyIn(b, in); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 5)
	if err := be.CopyOut(got, b); err != nil {
		t.Fatal(err)
	}
	for i, v := range in {
		if want := f32FromBF16(bf16FromF32(v)); got[i] != want {
			t.Errorf("element %d: got %v, want %v (bf16 of %v)", i, got[i], want, v)
		}
	}
	c, _ := be.Alloc(5, kernels.BF16)
	if err := be.Copy(c.Slice(1, 3), b.Slice(0, 3)); err != nil {
		t.Fatal(err)
	}
	if err := be.Zero(b.Slice(1, 1)); err != nil {
		t.Fatal(err)
	}
	be.CopyOut(got, c)
	if got[0] != 0 || got[1] != f32FromBF16(bf16FromF32(in[0])) || got[3] != f32FromBF16(bf16FromF32(in[2])) || got[4] != 0 {
		t.Errorf("after Copy into a view: %v", got)
	}
	be.CopyOut(got, b)
	if got[1] != 0 || got[0] == 0 {
		t.Errorf("after Zero of element 1: %v", got)
	}
	// A compute op on a bf16 buffer runs in float32 and rounds once.
	before := append([]float32(nil), got...)
	if err := be.Scale(b, 3); err != nil {
		t.Fatalf("Scale of a bf16 buffer: %v", err)
	}
	be.CopyOut(got, b)
	for i := range got {
		if want := f32FromBF16(bf16FromF32(before[i] * 3)); got[i] != want {
			t.Errorf("Scale: element %d = %v, want %v (bf16 of 3·%v)", i, got[i], want, before[i])
		}
	}
	// Copy between dtypes converts both ways.
	f, _ := be.Alloc(5, kernels.F32)
	if err := be.Copy(f, b); err != nil {
		t.Fatalf("Copy bf16 -> f32: %v", err)
	}
	fb := make([]float32, 5)
	be.CopyOut(fb, f)
	for i := range fb {
		if fb[i] != got[i] {
			t.Errorf("Copy bf16 -> f32: element %d = %v, want %v", i, fb[i], got[i])
		}
	}
	be.CopyIn(f, in)
	if err := be.Copy(b, f); err != nil {
		t.Fatalf("Copy f32 -> bf16: %v", err)
	}
	be.CopyOut(got, b)
	for i, v := range in {
		if want := f32FromBF16(bf16FromF32(v)); got[i] != want {
			t.Errorf("Copy f32 -> bf16: element %d = %v, want %v", i, got[i], want)
		}
	}
}

// TestCopyOverlappingViews: Copy between overlapping views of one buffer
// has memmove semantics.
func TestCopyOverlappingViews(t *testing.T) {
	be, _ := newFakeBackend(t, false)
	b, _ := be.Alloc(6, kernels.F32)
	be.CopyIn(b, []float32{0, 1, 2, 3, 4, 5})
	if err := be.Copy(b.Slice(1, 5), b.Slice(0, 5)); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 6)
	be.CopyOut(got, b)
	want := []float32{0, 0, 1, 2, 3, 4}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// TestUseAfterFree: a freed buffer and its views are errors, not faults.
func TestUseAfterFree(t *testing.T) {
	be, _ := newFakeBackend(t, false)
	b, _ := be.Alloc(4, kernels.F32)
	v := b.Slice(1, 2)
	be.Free(v) // a view: no-op
	if err := be.Scale(b, 2); err != nil {
		t.Fatalf("Free of a view released the allocation: %v", err)
	}
	be.Free(b)
	if err := be.Scale(v, 2); err == nil {
		t.Error("Scale of a view of a freed buffer: want an error")
	}
	be.Free(b) // twice: no-op
}

// backendsForTest returns the fake-GPU Backend and, when a GPU is usable,
// a real one too, for checks beyond kerneltest (bf16) that should run on
// both.
func backendsForTest(t *testing.T) map[string]*Backend {
	fake, _ := newFakeBackend(t, false)
	out := map[string]*Backend{"fake": fake}
	if Probe().Usable {
		out["gpu"] = newTestBackend(t, false)
	}
	return out
}

// TestMatmulBF16Weight: a frozen bf16 weight times float32 activations
// (rounded to bf16 on the way in) accumulates in float32, forward and dIn;
// dW stays float32.
func TestMatmulBF16Weight(t *testing.T) {
	for name, be := range backendsForTest(t) {
		t.Run(name, func(t *testing.T) {
			m, k, n := 7, 33, 5
			r := newTestRand()
			x, w, g := r.floats(m*k), r.floats(n*k), r.floats(m*n)
			up := func(v []float32, dt kernels.DType) kernels.Buffer {
				b, err := be.Alloc(len(v), dt)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { be.Free(b) })
				if err := be.CopyIn(b, v); err != nil {
					t.Fatal(err)
				}
				return b
			}
			bx, bw, bg := up(x, kernels.F32), up(w, kernels.BF16), up(g, kernels.F32)
			out, dIn := up(make([]float32, m*n), kernels.F32), up(make([]float32, m*k), kernels.F32)
			dW := up(make([]float32, n*k), kernels.F32)
			if err := be.Matmul(out, bx, bw, nil, m, k, n, 0.5, false); err != nil {
				t.Fatal(err)
			}
			if err := be.MatmulBackward(dIn, dW, nil, bg, bx, bw, m, k, n, 0.5); err != nil {
				t.Fatal(err)
			}
			h := func(v []float32) []float64 { // bf16-rounded, as the GPU sees them
				o := make([]float64, len(v))
				for i, x := range v {
					o[i] = float64(f32FromBF16(bf16FromF32(x)))
				}
				return o
			}
			x16, w16, g16 := h(x), h(w), h(g)
			wantOut := make([]float64, m*n)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					for l := 0; l < k; l++ {
						wantOut[i*n+j] += 0.5 * x16[i*k+l] * w16[j*k+l]
					}
				}
			}
			wantDIn := make([]float64, m*k)
			for i := 0; i < m; i++ {
				for l := 0; l < k; l++ {
					for j := 0; j < n; j++ {
						wantDIn[i*k+l] += 0.5 * g16[i*n+j] * w16[j*k+l]
					}
				}
			}
			wantDW := make([]float64, n*k) // float32 inputs, not rounded
			for j := 0; j < n; j++ {
				for l := 0; l < k; l++ {
					for i := 0; i < m; i++ {
						wantDW[j*k+l] += 0.5 * float64(g[i*n+j]) * float64(x[i*k+l])
					}
				}
			}
			for _, c := range []struct {
				name string
				b    kernels.Buffer
				want []float64
			}{{"out", out, wantOut}, {"dIn", dIn, wantDIn}, {"dW", dW, wantDW}} {
				got := make([]float32, c.b.Len())
				if err := be.CopyOut(got, c.b); err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if d := math.Abs(float64(got[i]) - c.want[i]); d > 1e-5*(1+math.Abs(c.want[i])) {
						t.Errorf("%s[%d] = %v, want %v", c.name, i, got[i], c.want[i])
						break
					}
				}
			}
		})
	}
}

type testRand struct{ s uint64 }

func newTestRand() *testRand { return &testRand{s: 42} }

func (r *testRand) floats(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		r.s = r.s*6364136223846793005 + 1442695040888963407
		v[i] = float32(int64(r.s>>11)%2000-1000) / 1000
	}
	return v
}
