package trainer

import (
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// TestResolvePrecision: auto is bf16 only on a GPU with bf16 tensor cores;
// an explicit bf16 where it cannot run is an error naming the flag and why.
func TestResolvePrecision(t *testing.T) {
	cpu, t4, h200 := Device{}, Device{CUDA: true}, Device{CUDA: true, BF16: true}
	for _, c := range []struct {
		flag    string
		dev     Device
		want    kernels.DType
		wantErr string
	}{
		{"auto", cpu, kernels.F32, ""},
		{"auto", t4, kernels.F32, ""},
		{"auto", h200, kernels.BF16, ""},
		{"", h200, kernels.BF16, ""},
		{"f32", h200, kernels.F32, ""},
		{"bf16", h200, kernels.BF16, ""},
		{"bf16", cpu, 0, "needs a GPU"},
		{"bf16", t4, 0, "no bf16 tensor cores"},
		{"fp16", h200, 0, "want auto, f32 or bf16"},
	} {
		cfg := Config{Precision: c.flag}
		got, err := cfg.ResolvePrecision(c.dev)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "--precision") {
				t.Errorf("%q on %+v: err %v, want one naming --precision and %q", c.flag, c.dev, err, c.wantErr)
			}
		case err != nil || got != c.want:
			t.Errorf("%q on %+v: %v, %v; want %v", c.flag, c.dev, got, err, c.want)
		}
	}
	bad := DefaultConfig()
	bad.Precision = "fp8"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--precision") {
		t.Errorf("Validate with --precision fp8: %v", err)
	}
}
