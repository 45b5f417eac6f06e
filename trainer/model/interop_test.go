package model

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/peertune/peertune/trainer/model/safetensors"
)

// interopAdapter builds a deterministic adapter on the llama_untied golden
// base, as a trained one would look (non-zero B), with a subset of targets and
// a rank and alpha other than the golden adapter's.
func interopAdapter(t *testing.T) (*Model, golden) {
	t.Helper()
	g := loadGolden(t, "llama_untied")
	lc := LoRAConfig{Rank: 4, Alpha: 12, Targets: []Proj{ProjQ, ProjV, ProjO, ProjDown}}
	m, err := New(newCPU(t), g.cfg, Options{Method: MethodLoRA, LoRA: lc})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadBase(filepath.Join(g.dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	randomize(t, m, m.Params, m.TrainLayout, 0.1, 42)
	return m, g
}

// TestPEFTInteropGolden: an adapter written by peertune's SaveAdapter, loaded
// by PEFT's PeftModel.from_pretrained, gives the logits peertune computes.
// The adapter files are compared byte for byte with the committed ones that
// PEFT loaded when interop/peft_logits.safetensors was made, so a change in
// what peertune writes cannot slip past this test.
func TestPEFTInteropGolden(t *testing.T) {
	m, g := interopAdapter(t)
	dir := t.TempDir()
	if err := m.SaveAdapter(dir, "llama_untied"); err != nil {
		t.Fatal(err)
	}
	committed := filepath.Join("testdata", "interop", "adapter")
	if os.Getenv("PEERTUNE_WRITE_INTEROP") == "1" {
		if err := m.SaveAdapter(committed, "llama_untied"); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s; now run peft_logits.py (make golden)", committed)
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors"} {
		a, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(committed, f))
		if err != nil {
			t.Fatalf("committed interop adapter missing (make golden): %v", err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s written by SaveAdapter differs from the committed file PEFT loaded", f)
		}
	}
	// Load back through peertune's own reader, as `peertune eval --adapter` does.
	lc, err := ReadPEFTConfig(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := New(newCPU(t), g.cfg, Options{Method: MethodLoRA, LoRA: lc})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.LoadBase(filepath.Join(g.dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := m2.LoadAdapter(filepath.Join(dir, "adapter_model.safetensors")); err != nil {
		t.Fatal(err)
	}
	logits, err := m2.Logits(g.batch)
	if err != nil {
		t.Fatal(err)
	}
	want := readTensor(t, filepath.Join("testdata", "interop", "peft_logits.safetensors"), "logits")
	checkClose(t, "logits vs PEFT", logits, want, 1e-4)
	base := g.tensor(t, "base_logits")
	if relErr(logits, base) < 1e-3 {
		t.Fatal("the adapter does not change the logits; the test would prove nothing")
	}

	// Live check when torch and peft are installed (make golden installs them).
	py, err := exec.LookPath("python3")
	if err != nil || exec.Command(py, "-c", "import torch, peft, transformers").Run() != nil {
		t.Log("live PEFT check skipped: python3 with torch, transformers and peft not found (pip install torch transformers peft safetensors)")
		return
	}
	out := filepath.Join(t.TempDir(), "logits.safetensors")
	cmd := exec.Command(py, filepath.Join("testdata", "peft_logits.py"), g.dir, dir, filepath.Join(g.dir, "batch.json"), out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("peft_logits.py: %v\n%s", err, msg)
	}
	checkClose(t, "logits vs live PEFT", logits, readTensor(t, out, "logits"), 1e-4)
}

func readTensor(t *testing.T, path, name string) []float32 {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := f.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
