package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/model/safetensors"
)

// The golden cases were written by testdata/gen_golden.py with Hugging Face
// transformers + peft (make golden). They pin peertune's forward and backward
// to the reference implementation.
var goldenCases = []string{"llama_untied", "qwen2_tied"}

type goldenBatch struct {
	InputIDs [][]int32 `json:"input_ids"`
	Labels   [][]int32 `json:"labels"`
}

type golden struct {
	dir     string
	cfg     Config
	lora    LoRAConfig
	batch   *Batch
	outputs *safetensors.File
}

func loadGolden(t *testing.T, name string) golden {
	t.Helper()
	dir := filepath.Join("testdata", "golden", name)
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatalf("golden data missing (run make golden): %v", err)
	}
	cfg, err := ParseHFConfig(filepath.Join(dir, "config.json"), data)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := ReadPEFTConfig(filepath.Join(dir, "adapter", "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "batch.json"))
	if err != nil {
		t.Fatal(err)
	}
	var gb goldenBatch
	if err := json.Unmarshal(raw, &gb); err != nil {
		t.Fatal(err)
	}
	// HF labels are unshifted: logits at t predict labels[t+1].
	b := &Batch{Rows: len(gb.InputIDs), Seq: len(gb.InputIDs[0])}
	for r := range gb.InputIDs {
		for i, tok := range gb.InputIDs[r] {
			b.Tokens = append(b.Tokens, tok)
			tgt := int32(kernels.IgnoreIndex)
			if i+1 < b.Seq {
				tgt = gb.Labels[r][i+1]
			}
			b.Targets = append(b.Targets, tgt)
			b.Positions = append(b.Positions, int32(i))
		}
	}
	out, err := safetensors.Open(filepath.Join(dir, "outputs.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return golden{dir: dir, cfg: cfg, lora: lc, batch: b, outputs: out}
}

// relErr is max|a-b| / max|b|: the error relative to the reference's scale,
// which is robust to individual near-zero entries.
func relErr(got []float32, want []float32) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-float64(want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / math.Max(den, 1e-30)
}

func (g golden) tensor(t *testing.T, name string) []float32 {
	t.Helper()
	v, err := g.outputs.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func checkClose(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	if e := relErr(got, want); e > tol {
		t.Errorf("%s: relative error %.3g > %.0e", what, e, tol)
	}
}

func TestGoldenLoRA(t *testing.T) {
	for _, name := range goldenCases {
		for _, recompute := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "", true: "/recompute"}[recompute], func(t *testing.T) {
				g := loadGolden(t, name)
				m, err := New(newCPU(t), g.cfg, Options{Method: MethodLoRA, LoRA: g.lora, Recompute: recompute})
				if err != nil {
					t.Fatal(err)
				}
				if err := m.LoadBase(filepath.Join(g.dir, "model.safetensors")); err != nil {
					t.Fatal(err)
				}
				if err := m.LoadAdapter(filepath.Join(g.dir, "adapter", "adapter_model.safetensors")); err != nil {
					t.Fatal(err)
				}
				logits, err := m.Logits(g.batch)
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, "logits", logits, g.tensor(t, "logits"), 1e-4)

				n := g.batch.CountTargets()
				if err := m.ZeroGrads(); err != nil {
					t.Fatal(err)
				}
				sum, cnt, err := m.ForwardBackward(g.batch, 1/float32(n), 0)
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, "loss", []float32{float32(sum / float64(cnt))}, g.tensor(t, "loss"), 1e-4)
				grads := make([]float32, m.Grads.Len())
				if err := m.be.CopyOut(grads, m.Grads); err != nil {
					t.Fatal(err)
				}
				checked := 0
				for _, ten := range m.TrainLayout.Tensors {
					checkClose(t, "grad "+ten.Name, grads[ten.Offset:ten.Offset+ten.Size()], g.tensor(t, "grad."+ten.Name), 1e-3)
					checked++
				}
				if checked != 2*g.cfg.Layers*len(g.lora.Targets) {
					t.Fatalf("checked %d LoRA gradients", checked)
				}
			})
		}
	}
}

func TestGoldenFull(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			g := loadGolden(t, name)
			m, err := New(newCPU(t), g.cfg, Options{Method: MethodFull})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.LoadBase(filepath.Join(g.dir, "model.safetensors")); err != nil {
				t.Fatal(err)
			}
			logits, err := m.Logits(g.batch)
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, "base logits", logits, g.tensor(t, "base_logits"), 1e-4)
			n := g.batch.CountTargets()
			sum, cnt, err := m.ForwardBackward(g.batch, 1/float32(n), 0)
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, "base loss", []float32{float32(sum / float64(cnt))}, g.tensor(t, "base_loss"), 1e-4)
			grads := make([]float32, m.Grads.Len())
			if err := m.be.CopyOut(grads, m.Grads); err != nil {
				t.Fatal(err)
			}
			for _, ten := range m.TrainLayout.Tensors {
				checkClose(t, "grad "+ten.Name, grads[ten.Offset:ten.Offset+ten.Size()], g.tensor(t, "fullgrad."+ten.Name), 1e-3)
			}
			// Every reference gradient must correspond to a tensor we trained.
			for _, name := range g.outputs.Names() {
				if key, ok := strings.CutPrefix(name, "fullgrad."); ok {
					if _, ok := m.TrainLayout.Lookup(key); !ok {
						t.Errorf("reference has a gradient for %s, which peertune does not train", key)
					}
				}
			}
		})
	}
}
