package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The golden vectors of ../testdata (written by gen_golden.py with Python's
// safetensors) read back with the shapes the HF config implies, and agree with
// themselves: logits = hidden · lm_headᵀ and loss = CE(logits, shifted labels).

type goldenConfig struct {
	Architectures     []string `json:"architectures"`
	HiddenSize        int      `json:"hidden_size"`
	IntermediateSize  int      `json:"intermediate_size"`
	NumLayers         int      `json:"num_hidden_layers"`
	NumHeads          int      `json:"num_attention_heads"`
	NumKVHeads        int      `json:"num_key_value_heads"`
	VocabSize         int      `json:"vocab_size"`
	TieWordEmbeddings bool     `json:"tie_word_embeddings"`
}

type goldenBatch struct {
	InputIDs      [][]int64 `json:"input_ids"`
	Labels        [][]int64 `json:"labels"`
	LabelsShifted bool      `json:"labels_shifted"`
	IgnoreIndex   int64     `json:"ignore_index"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func openT(t *testing.T, path string) *File {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestGoldenFiles(t *testing.T) {
	dirs, err := filepath.Glob("../testdata/golden/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 2 {
		t.Fatalf("golden cases: %v (run make golden)", dirs)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) { checkGolden(t, dir) })
	}
}

func checkGolden(t *testing.T, dir string) {
	var cfg goldenConfig
	readJSON(t, filepath.Join(dir, "config.json"), &cfg)
	var acfg struct {
		R             int      `json:"r"`
		Alpha         float64  `json:"lora_alpha"`
		TargetModules []string `json:"target_modules"`
	}
	readJSON(t, filepath.Join(dir, "adapter", "adapter_config.json"), &acfg)
	var batch goldenBatch
	readJSON(t, filepath.Join(dir, "batch.json"), &batch)
	if batch.LabelsShifted || batch.IgnoreIndex != -100 {
		t.Fatalf("batch.json: %+v", batch)
	}

	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize
	hd := H / cfg.NumHeads
	kv := cfg.NumKVHeads * hd
	// HF Linear weights are [out, in].
	proj := map[string][2]int{
		"self_attn.q_proj": {H, H}, "self_attn.k_proj": {kv, H}, "self_attn.v_proj": {kv, H},
		"self_attn.o_proj": {H, H}, "mlp.gate_proj": {I, H}, "mlp.up_proj": {I, H}, "mlp.down_proj": {H, I},
	}
	model := openT(t, filepath.Join(dir, "model.safetensors"))
	want := map[string][]int{"model.embed_tokens.weight": {V, H}, "model.norm.weight": {H}}
	if !cfg.TieWordEmbeddings {
		want["lm_head.weight"] = []int{V, H}
	}
	qwen := cfg.Architectures[0] == "Qwen2ForCausalLM"
	for l := range cfg.NumLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		want[p+"input_layernorm.weight"] = []int{H}
		want[p+"post_attention_layernorm.weight"] = []int{H}
		for m, s := range proj {
			want[p+m+".weight"] = s[:]
		}
		if qwen { // q/k/v carry biases in Qwen2
			for _, m := range []string{"q_proj", "k_proj", "v_proj"} {
				want[p+"self_attn."+m+".bias"] = []int{proj["self_attn."+m][0]}
			}
		}
	}
	checkNames(t, model, want)
	weights := map[string][]float32{}
	for name, shape := range want {
		w, err := model.Float32(name, shape...)
		if err != nil {
			t.Fatal(err)
		}
		weights[name] = w
	}
	if cfg.TieWordEmbeddings {
		if _, err := model.Float32("lm_head.weight"); !errors.Is(err, ErrNotFound) {
			t.Errorf("tied model: lm_head.weight: %v", err)
		}
	}

	adapter := openT(t, filepath.Join(dir, "adapter", "adapter_model.safetensors"))
	awant := map[string][]int{}
	for l := range cfg.NumLayers {
		for m, s := range proj {
			p := fmt.Sprintf("base_model.model.model.layers.%d.%s.", l, m)
			awant[p+"lora_A.weight"] = []int{acfg.R, s[1]}
			awant[p+"lora_B.weight"] = []int{s[0], acfg.R}
		}
	}
	checkNames(t, adapter, awant)
	for name, shape := range awant {
		if _, err := adapter.Float32(name, shape...); err != nil {
			t.Fatal(err)
		}
	}

	out := openT(t, filepath.Join(dir, "outputs.safetensors"))
	B, T := len(batch.InputIDs), len(batch.InputIDs[0])
	owant := map[string][]int{
		"logits": {B, T, V}, "loss": {1}, "hidden": {B, T, H},
		"base_logits": {B, T, V}, "base_loss": {1},
	}
	for name, shape := range awant {
		owant["grad."+name] = shape
	}
	for name, shape := range want {
		owant["fullgrad."+name] = shape
	}
	checkNames(t, out, owant)
	vals := map[string][]float32{}
	for name, shape := range owant {
		v, err := out.Float32(name, shape...)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("%s[%d] = %g", name, i, x)
			}
		}
		vals[name] = v
	}
	if out.Metadata["architecture"] != cfg.Architectures[0] {
		t.Errorf("metadata architecture %q, config %v", out.Metadata["architecture"], cfg.Architectures)
	}
	// PEFT scales the LoRA update by alpha/r (use_rslora false).
	if s, err := strconv.ParseFloat(out.Metadata["lora_scaling"], 64); err != nil || s != acfg.Alpha/float64(acfg.R) {
		t.Errorf("lora_scaling %q, alpha/r = %g", out.Metadata["lora_scaling"], acfg.Alpha/float64(acfg.R))
	}

	// logits = hidden · lm_headᵀ (LoRA does not touch lm_head).
	head := weights["lm_head.weight"]
	if cfg.TieWordEmbeddings {
		head = weights["model.embed_tokens.weight"]
	}
	hidden, logits := vals["hidden"], vals["logits"]
	for r := range B * T {
		for v := range V {
			var s float64
			for k := range H {
				s += float64(hidden[r*H+k]) * float64(head[v*H+k])
			}
			if d := math.Abs(s - float64(logits[r*V+v])); d > 1e-4 {
				t.Fatalf("logits[%d,%d] = %g, hidden·lm_headᵀ = %g", r, v, logits[r*V+v], s)
			}
		}
	}
	// loss = mean over unmasked t of -log softmax(logits[b,t])[labels[b,t+1]].
	for _, c := range [][2]string{{"logits", "loss"}, {"base_logits", "base_loss"}} {
		lg := vals[c[0]]
		var sum float64
		var n int
		for b := range B {
			for tt := 0; tt+1 < T; tt++ {
				y := batch.Labels[b][tt+1]
				if y == batch.IgnoreIndex {
					continue
				}
				row := lg[(b*T+tt)*V : (b*T+tt+1)*V]
				mx := float64(slices.Max(row))
				var z float64
				for _, x := range row {
					z += math.Exp(float64(x) - mx)
				}
				sum += mx + math.Log(z) - float64(row[y])
				n++
			}
		}
		if got := float64(vals[c[1]][0]); math.Abs(got-sum/float64(n)) > 1e-5 {
			t.Errorf("%s = %g, cross-entropy of %s over %d shifted targets = %g", c[1], got, c[0], n, sum/float64(n))
		}
	}
	// The adapter changes the output.
	var maxDiff float64
	for i := range logits {
		maxDiff = max(maxDiff, math.Abs(float64(logits[i]-vals["base_logits"][i])))
	}
	if maxDiff < 1e-2 {
		t.Errorf("LoRA logits equal the base logits (max diff %g): lora_B zero?", maxDiff)
	}
}

func checkNames(t *testing.T, f *File, want map[string][]int) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	if got := f.Names(); !slices.Equal(got, names) {
		t.Fatalf("%s: tensors\n%s\nwant\n%s", f.Path, strings.Join(got, "\n"), strings.Join(names, "\n"))
	}
	for _, n := range names {
		in, _ := f.Info(n)
		if in.DType != F32 {
			t.Errorf("%s: %s is %s, want F32", f.Path, n, in.DType)
		}
	}
}
