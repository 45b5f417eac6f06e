package kerneltest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// TestSuiteOnReferenceBackend: a backend that is the float64 reference
// rounded to float32 must pass every check. A failure here is a bug in the
// suite (a check or a tolerance inconsistent with the references), not in
// any backend.
func TestSuiteOnReferenceBackend(t *testing.T) {
	Run(t, func(t *testing.T) kernels.Backend { return &refBackend{} })
}

// mutantEnv selects the bug TestMutantChild switches on.
const mutantEnv = "KERNELTEST_MUTANT"

// TestMutantChild runs the suite against a reference backend with one bug;
// TestMutants runs it in a child process and expects it to fail.
func TestMutantChild(t *testing.T) {
	m := os.Getenv(mutantEnv)
	if m == "" {
		t.Skip("run by TestMutants")
	}
	Run(t, func(t *testing.T) kernels.Backend { return &refBackend{mutant: m} })
}

// TestMutants shows that the suite catches each kind of bug it is meant to,
// in the op that has it, with a message that says what is wrong. Each
// mutant is one bug of the reference backend (refbackend_test.go); the
// suite runs only the op concerned, in a child process (a failing suite
// cannot be run inside a passing test).
func TestMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child test process per mutant")
	}
	cases := []struct {
		mutant, op string
		want       string // a fragment of the failure message
	}{
		{"matmul-bwd-overwrite", "MatmulBackward", "OVERWROTE the pre-filled gradient buffer"},
		{"matmulbwd-nil-error", "MatmulBackward", "(dW nil): unexpected error"},
		{"matmul-panic", "Matmul", "panicked"},
		{"matmul-len-lenient", "Matmul", "one element too long"},
		{"embedding-bwd-last-wins", "EmbeddingBackward", "dTable (all gradients): max error"},
		{"rmsnorm-eps-outside", "RMSNorm", "rstd (as got/want per row): max error"},
		{"rope-interleaved", "RoPE", "out: max error"},
		{"attention-noncausal", "Attention", "out: max error"},
		{"attention-bwd-gqa-first-head", "AttentionBackward", "dk (all gradients): max error"},
		{"dropout-length", "Dropout", "mask depends on the buffer length"},
		{"dropout-weak", "Dropout", "neighbouring mask bits agree"},
		{"ce-ignore-as-zero", "CrossEntropy", "has target IgnoreIndex"},
		{"adamw-no-bias-correction", "AdamW", "params update (new − old): max error"},
		{"sumsquares-float32", "SumSquares", "out[0]: max error"},
		{"scale-oob-write", "Scale", "the op wrote outside its buffer"},
		{"swiglu-bwd-writes-dout", "SwiGLUBackward", "input dOut (len 1) was modified"},
	}
	for _, tc := range cases {
		t.Run(tc.mutant, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMutantChild$/^"+tc.op+"$", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+tc.mutant)
			out, err := cmd.CombinedOutput()
			s := string(out)
			if err == nil {
				t.Fatalf("the suite passed a backend with bug %q; output:\n%s", tc.mutant, tail(s))
			}
			if !strings.Contains(s, "--- FAIL: TestMutantChild/"+tc.op+"/") && !strings.Contains(s, "--- FAIL: TestMutantChild/"+tc.op+" ") {
				t.Errorf("bug %q did not fail op %s; output:\n%s", tc.mutant, tc.op, tail(s))
			}
			if !strings.Contains(s, tc.want) {
				t.Errorf("bug %q: failure output lacks %q; output:\n%s", tc.mutant, tc.want, tail(s))
			}
		})
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return "...\n" + s[len(s)-3000:]
	}
	return s
}
