package kerneltest

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peertune/peertune/kernels"
)

// DefaultSeed is the seed of the random shapes and data when neither
// Options.Seed nor the environment sets one. A fixed default keeps CI
// deterministic; set SeedEnv to "random" to explore other shapes.
const DefaultSeed = 20250101

// SeedEnv names the environment variable that overrides DefaultSeed: a
// decimal seed reproduces a failing run, "random" draws a new seed from the
// clock (and logs it).
const SeedEnv = "KERNELTEST_SEED"

// Options tunes Run for one backend. The zero value is right for a float32
// backend.
type Options struct {
	// TolScale multiplies every tolerance of the table in tolerance.go. 0
	// means 1 (float32 arithmetic). A backend that multiplies in TF32 or
	// stores activations in bf16 passes the factor it needs, e.g. 100 for
	// TF32 matmuls, and says why in its own test.
	TolScale float64
	// Seed chooses the random shapes and data. 0 means SeedEnv if set, else
	// DefaultSeed. Every subtest derives its own generator from (Seed, its
	// full name), so `go test -run 'TestX/Matmul/m=3,k=17,n=1,'` reproduces
	// one case with the same data.
	Seed uint64
	// RandomShapes is the number of random shapes per op in addition to the
	// fixed edge-case and realistic shapes. 0 means 3, or 1 under -short.
	RandomShapes int
	// LogErrors logs every comparison's error and its fraction of the
	// tolerance (seen with -v): the data to calibrate TolScale for a new
	// backend, or to see how much headroom a change left. The environment
	// variable LogErrorsEnv=1 sets it too.
	LogErrors bool
}

// LogErrorsEnv names the environment variable that sets Options.LogErrors.
const LogErrorsEnv = "KERNELTEST_LOG_ERRORS"

// Run runs every op check against the backend that newBackend makes. It is
// called once per op (one top-level subtest each: "Matmul",
// "MatmulBackward", ...), with that subtest's t, so a backend may register
// its cleanup with t.Cleanup. Within an op every shape is its own subtest,
// e.g. "Matmul/m=7,k=33,n=17,bias,scale=0.37,acc"; besides the shapes, each
// op has an "Errors" subtest for its shape and range errors.
func Run(t *testing.T, newBackend func(t *testing.T) kernels.Backend) {
	t.Helper()
	RunOptions(t, newBackend, Options{})
}

// RunOptions is Run with options.
func RunOptions(t *testing.T, newBackend func(t *testing.T) kernels.Backend, opts Options) {
	t.Helper()
	if opts.TolScale == 0 {
		opts.TolScale = 1
	}
	if opts.Seed == 0 {
		opts.Seed = seedFromEnv(t)
	}
	if os.Getenv(LogErrorsEnv) == "1" {
		opts.LogErrors = true
	}
	if opts.RandomShapes == 0 {
		opts.RandomShapes = 3
		if testing.Short() {
			opts.RandomShapes = 1
		}
	}
	t.Logf("kerneltest: seed %d (reproduce with %s=%d), tolerance scale %g", opts.Seed, SeedEnv, opts.Seed, opts.TolScale)
	for _, op := range allOps {
		t.Run(op.name, func(t *testing.T) {
			be := newBackend(t)
			if be == nil {
				t.Fatal("newBackend returned nil")
			}
			op.run(&opT{t: t, be: be, opts: opts, name: op.name})
		})
	}
}

func seedFromEnv(t *testing.T) uint64 {
	s := os.Getenv(SeedEnv)
	switch s {
	case "":
		return DefaultSeed
	case "random":
		return uint64(time.Now().UnixNano())
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		t.Fatalf("%s=%q: want a positive decimal seed or \"random\"", SeedEnv, s)
	}
	return v
}

// allOps is the list of top-level subtests, in the order a reader would check
// a new backend: buffers first (everything else depends on them), then the
// simple ops, then the fused ones.
var allOps = []struct {
	name string
	run  func(o *opT)
}{
	{"Buffers", checkBuffers},
	{"Zero", checkZero},
	{"Copy", checkCopy},
	{"Add", checkAdd},
	{"Scale", checkScale},
	{"SumSquares", checkSumSquares},
	{"Embedding", checkEmbedding},
	{"EmbeddingBackward", checkEmbeddingBackward},
	{"Matmul", checkMatmul},
	{"MatmulBackward", checkMatmulBackward},
	{"RMSNorm", checkRMSNorm},
	{"RMSNormBackward", checkRMSNormBackward},
	{"RoPE", checkRoPE},
	{"RoPEBackward", checkRoPEBackward},
	{"Attention", checkAttention},
	{"AttentionBackward", checkAttentionBackward},
	{"SwiGLU", checkSwiGLU},
	{"SwiGLUBackward", checkSwiGLUBackward},
	{"Dropout", checkDropout},
	{"DropoutBackward", checkDropoutBackward},
	{"CrossEntropy", checkCrossEntropy},
	{"AdamW", checkAdamW},
}

// opT is one op's top-level subtest: its backend and options.
type opT struct {
	t    *testing.T
	be   kernels.Backend
	opts Options
	name string
}

// random returns the number of random shapes to add to the fixed ones.
func (o *opT) random() int { return o.opts.RandomShapes }

// rng returns a generator for drawing this op's random shapes.
func (o *opT) rng() *rand.Rand { return newRand(o.opts.Seed, o.name+"/shapes") }

// run runs f as the subtest name with a fresh tcase.
func (o *opT) run(name string, f func(c *tcase)) {
	o.t.Helper()
	o.t.Run(name, func(t *testing.T) {
		c := &tcase{t: t, be: o.be, opts: o.opts, rng: newRand(o.opts.Seed, t.Name())}
		t.Cleanup(c.cleanup)
		f(c)
	})
}

// newRand derives an independent generator from the seed and a name, so that
// each subtest's data does not depend on which other subtests ran.
func newRand(seed uint64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// guard is the number of elements on each side of every buffer the suite
// hands to the backend. Every buffer is a view (Slice) into a larger one whose
// margins hold NaN: a kernel that writes outside its view is caught by the
// guard check, one that reads outside it produces NaN in its output. The odd
// size makes every view's offset unaligned, which vectorised kernels must
// handle because Slice allows any offset.
const guard = 3

type guarded struct {
	parent kernels.Buffer
	n      int
	name   string
	// input, for buffers made by tcase.in, is what they must still hold at
	// the end of the subtest: ops only read their inputs.
	input []float32
}

// tcase is one shape's subtest.
type tcase struct {
	t    *testing.T
	be   kernels.Backend
	opts Options
	rng  *rand.Rand
	bufs []guarded
}

func (c *tcase) cleanup() {
	for _, g := range c.bufs {
		host := make([]float32, g.parent.Len())
		if err := c.be.CopyOut(host, g.parent); err != nil {
			c.t.Errorf("CopyOut of buffer %s for the guard check: %v", g.name, err)
		} else {
			for i, v := range g.input {
				if math.Float32bits(host[guard+i]) != math.Float32bits(v) {
					c.t.Errorf("input %s (len %d) was modified: element %d is %g, was %g (ops must not write their inputs)", g.name, g.n, i, host[guard+i], v)
					break
				}
			}
			for i, v := range host {
				if (i < guard || i >= guard+g.n) && !math.IsNaN(float64(v)) {
					pos := i - guard
					if i >= guard+g.n {
						pos = i - guard - g.n
					}
					where := "before"
					if i >= guard {
						where = "after"
					}
					c.t.Errorf("buffer %s (len %d): element %d %s the view was overwritten with %g: the op wrote outside its buffer", g.name, g.n, pos, where, v)
					break
				}
			}
		}
		c.be.Free(g.parent)
	}
	c.bufs = nil
}

// up uploads data into a new guarded buffer and returns the view.
func (c *tcase) up(name string, data []float32) kernels.Buffer {
	c.t.Helper()
	n := len(data)
	parent, err := c.be.Alloc(n+2*guard, kernels.F32)
	if err != nil {
		c.t.Fatalf("Alloc(%d) for %s: %v", n+2*guard, name, err)
	}
	c.bufs = append(c.bufs, guarded{parent: parent, n: n, name: name})
	host := make([]float32, n+2*guard)
	for i := range host {
		host[i] = float32(math.NaN())
	}
	copy(host[guard:], data)
	if err := c.be.CopyIn(parent, host); err != nil {
		c.t.Fatalf("CopyIn(%d) for %s: %v", len(host), name, err)
	}
	return parent.Slice(guard, n)
}

// in uploads a buffer that ops may only read; the end of the subtest checks
// that it still holds data.
func (c *tcase) in(name string, data []float32) kernels.Buffer {
	c.t.Helper()
	b := c.up(name, data)
	c.bufs[len(c.bufs)-1].input = append([]float32(nil), data...)
	return b
}

// zeros uploads n zeros.
func (c *tcase) zeros(name string, n int) kernels.Buffer {
	return c.up(name, make([]float32, n))
}

// get syncs and reads a buffer back as float64.
func (c *tcase) get(name string, b kernels.Buffer) []float64 {
	c.t.Helper()
	if err := c.be.Sync(); err != nil {
		c.t.Fatalf("Sync before reading %s: %v", name, err)
	}
	host := make([]float32, b.Len())
	if err := c.be.CopyOut(host, b); err != nil {
		c.t.Fatalf("CopyOut of %s: %v", name, err)
	}
	return f64(host)
}

// call runs one backend op, turning a panic into a test failure (the contract
// is errors, never panics). It returns the op's error.
func (c *tcase) call(op string, f func() error) (err error) {
	c.t.Helper()
	defer func() {
		if r := recover(); r != nil {
			c.t.Errorf("%s panicked: %v (ops must return errors, never panic)", op, r)
			err = errPanicked
		}
	}()
	return f()
}

var errPanicked = errors.New("panicked")

// must runs an op that must succeed; a failure stops this subtest, because
// the checks after it would only report its consequences.
func (c *tcase) must(op string, f func() error) {
	c.t.Helper()
	if err := c.call(op, f); err != nil {
		c.t.Fatalf("%s: unexpected error: %v", op, err)
	}
}

// mustErr runs an op that must fail because of what is described by why, and
// checks that the error names the op (the contract: "a mismatch returns an
// error naming the op").
func (c *tcase) mustErr(op, why string, f func() error) {
	c.t.Helper()
	err := c.call(op, f)
	switch {
	case err == errPanicked:
		// already reported
	case err == nil:
		c.t.Errorf("%s with %s: returned nil, want an error", op, why)
	case !strings.Contains(squash(err.Error()), squash(baseOp(op))):
		c.t.Errorf("%s with %s: error %q does not name the op (%q)", op, why, err, baseOp(op))
	}
}

// baseOp strips "Backward" so that an error from MatmulBackward may say
// "matmul backward: ..." or "matmul: backward ...".
func baseOp(op string) string { return strings.TrimSuffix(op, "Backward") }

// squash lowercases and drops separators, so "RMS norm", "rms_norm" and
// "RMSNorm" all match.
func squash(s string) string {
	s = strings.ToLower(s)
	return strings.NewReplacer(" ", "", "_", "", "-", "", ".", "").Replace(s)
}

// uniform returns n values drawn uniformly from [lo, hi).
func (c *tcase) uniform(n int, lo, hi float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(lo + (hi-lo)*c.rng.Float64())
	}
	return x
}

// prefill returns values to pre-fill a gradient output with, of the same
// magnitude as the gradient ref, so that both "overwrote instead of adding"
// and rounding of the sum show up at the scale the gradient is compared at.
func (c *tcase) prefill(ref []float64) []float32 {
	s := maxAbs(ref)
	if s == 0 {
		s = 1
	}
	return c.uniform(len(ref), -s, s)
}

func f64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

func f32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

func sub(a, b []float64) []float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}

func add(a, b []float64) []float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] + b[i]
	}
	return d
}

func maxAbs(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// dims describes a tensor's shape for error messages: "out[2,5]".
type dims []int

func (d dims) index(flat int) string {
	if len(d) == 0 {
		return fmt.Sprintf("[%d]", flat)
	}
	idx := make([]string, len(d))
	for i := len(d) - 1; i >= 0; i-- {
		if d[i] <= 0 {
			return fmt.Sprintf("[%d]", flat)
		}
		idx[i] = strconv.Itoa(flat % d[i])
		flat /= d[i]
	}
	return "[" + strings.Join(idx, ",") + "]"
}

// cmp is one comparison of a backend result against a float64 reference.
type cmp struct {
	what  string    // "out", "dW", ... (named in the failure)
	got   []float64 // backend result (prefill already subtracted for grads)
	want  []float64 // reference
	shape dims      // for printing the worst index
	tol   float64   // already scaled by TolScale
	// floor is the smallest denominator of the error (see tolerance.go):
	// 1 for log-domain outputs (lse, losses) whose error is absolute.
	floor float64
	// prefill, when set, is what the gradient output held before the call;
	// it lets a failure say "overwrote instead of adding".
	prefill []float64
}

// check compares and reports; it returns true when within tolerance.
//
// The metric is normwise: max_i |got_i − want_i| / max(max_i |want_i|, floor).
// Float32 rounding error of a sum scales with the magnitude of its terms, not
// of its result, so an element-relative test would flag harmless cancellation
// and a purely absolute one would need a different tolerance per input scale.
// NaN or Inf where the reference is finite always fails.
func (c *tcase) check(x cmp) bool {
	c.t.Helper()
	if len(x.got) != len(x.want) {
		c.t.Errorf("%s: got %d elements, want %d", x.what, len(x.got), len(x.want))
		return false
	}
	scale := math.Max(maxAbs(x.want), x.floor)
	if scale == 0 {
		scale = math.SmallestNonzeroFloat64
	}
	worst, worstErr, over := -1, 0.0, 0
	for i := range x.got {
		g, w := x.got[i], x.want[i]
		if math.IsNaN(g) || math.IsInf(g, 0) {
			c.t.Errorf("%s%s = %v, want %.9g (%d elements; seed %d)", x.what, x.shape.index(i), g, w, len(x.got), c.opts.Seed)
			return false
		}
		e := math.Abs(g-w) / scale
		if e > x.tol {
			over++
		}
		if e > worstErr || worst < 0 {
			worst, worstErr = i, e
		}
	}
	if c.opts.LogErrors {
		c.t.Logf("%s: max error %.3g = %.2f of tol %.3g", x.what, worstErr, worstErr/x.tol, x.tol)
	}
	if worstErr <= x.tol {
		return true
	}
	norm := fmt.Sprintf("max|want| = %.4g", maxAbs(x.want))
	if x.floor > maxAbs(x.want) {
		norm = fmt.Sprintf("floor %.4g > max|want| = %.4g", x.floor, maxAbs(x.want))
	}
	c.t.Errorf("%s: max error %.3g > tol %.3g (|got−want| / %s); %d of %d elements over tol; worst at %s: got %.9g want %.9g%s (seed %d)",
		x.what, worstErr, x.tol, norm, over, len(x.got), x.shape.index(worst), x.got[worst], x.want[worst], c.diagnose(x, scale), c.opts.Seed)
	return false
}

// diagnose recognises the common ways of breaking the accumulate contract.
func (c *tcase) diagnose(x cmp, scale float64) string {
	if x.prefill == nil {
		return ""
	}
	// got holds result−prefill; if the op overwrote, result = want, so
	// got = want − prefill.
	overwrote, untouched := true, true
	for i := range x.got {
		if math.Abs(x.got[i]-(x.want[i]-x.prefill[i]))/scale > x.tol {
			overwrote = false
		}
		if math.Abs(x.got[i])/scale > x.tol {
			untouched = false
		}
	}
	switch {
	case untouched:
		return " — the output was not changed at all"
	case overwrote:
		return " — the op OVERWROTE the pre-filled gradient buffer; Backward ops must ADD into it (dX += ...)"
	}
	return ""
}

// tol returns the scaled tolerance of a table entry.
func (c *tcase) tol(key string) float64 {
	c.t.Helper()
	v, ok := tolerances[key]
	if !ok {
		c.t.Fatalf("kerneltest bug: no tolerance for %q", key)
	}
	return v * c.opts.TolScale
}

// pick draws a size for a random shape: half the time one of the sizes that
// break blocking and vectorisation assumptions, otherwise uniform in [1, max].
func pick(r *rand.Rand, max int) int {
	odd := []int{1, 2, 3, 5, 7, 9, 17, 31, 33, 63, 65}
	if r.IntN(2) == 0 {
		for {
			v := odd[r.IntN(len(odd))]
			if v <= max {
				return v
			}
		}
	}
	return 1 + r.IntN(max)
}
