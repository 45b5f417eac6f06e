// Package kerneltest is the one test suite every kernels.Backend runs, in the
// manner of ggml's test-backend-ops: one harness, every op, every backend, a
// tolerance per op.
//
// A backend's test calls Run with a constructor:
//
//	func TestKernels(t *testing.T) {
//		kerneltest.Run(t, func(t *testing.T) kernels.Backend {
//			be, err := cpu.New(cpu.DefaultOptions())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return be
//		})
//	}
//
// A backend with reduced-precision arithmetic says so once:
//
//	kerneltest.RunOptions(t, newCUDA, kerneltest.Options{TolScale: 100}) // TF32 GEMMs
//
// What it checks, for every op of kernels.Backend:
//
//   - Forward ops against a float64 reference written plainly in Go
//     (reference.go), on fixed edge-case shapes (sizes 1, 3, 7, 17, 33, 65,
//     one row, seq 1), one realistic shape per op, and random shapes drawn
//     from a seeded generator (Options.Seed, or KERNELTEST_SEED; the seed is
//     logged and in every failure message).
//   - Backward ops against the analytic float64 reference backward over every
//     element and against central finite differences of the float64
//     reference forward at sampled coordinates, for the random objective
//     L = Σ w·out (so dOut = w).
//   - The accumulate contract: every gradient output is pre-filled with
//     random values and must come back as pre-fill + gradient; each gradient
//     output may be nil alone (and all together) without error.
//   - Shape errors: each buffer one element short and one element long
//     returns an error that names the op; tokens and targets out of range
//     return errors; panics are failures.
//   - Buffer views: every buffer handed to an op is a Slice at an unaligned
//     offset of a larger buffer whose margins hold NaN, so writes outside the
//     view fail the guard check and reads outside it poison the output.
//     Inputs are checked unchanged after the subtest.
//   - Dropout's mask: deterministic per seed, independent of the buffer
//     length, different for another seed, kept fraction and neighbour
//     independence within statistical bounds, kept values scaled by 1/(1−p),
//     and the backward uses the forward's mask.
//
// The tolerances and the error metric are in tolerance.go, one entry per op
// with the reason for its value. KERNELTEST_LOG_ERRORS=1 with -v logs every
// comparison's error as a fraction of its tolerance, the data for choosing a
// new backend's TolScale. Under -short fewer random shapes run and the
// finite-difference checks sample fewer coordinates.
//
// Reproducing a failure: every failure message carries the seed; run
//
//	KERNELTEST_SEED=<seed> go test ./kernels/cpu -run 'TestKernelsGonum/Matmul/m=7,k=33,n=17,'
//
// which regenerates the same shapes and data for that one subtest.
// KERNELTEST_SEED=random explores new shapes (the seed is logged).
//
// The package's own tests check the references against finite differences
// and known values, run the suite against a float64-exact backend, and run it
// against deliberately broken backends to show that each kind of bug fails
// the op it should.
package kerneltest
