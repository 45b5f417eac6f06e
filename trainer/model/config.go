package model

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Config is the architecture of a Llama-family decoder. Mistral and Qwen2
// checkpoints fit it too: Qwen2 adds biases to q/k/v (QKVBias).
type Config struct {
	Hidden       int     `json:"hidden_size"`
	Intermediate int     `json:"intermediate_size"`
	Layers       int     `json:"num_hidden_layers"`
	Heads        int     `json:"num_attention_heads"`
	KVHeads      int     `json:"num_key_value_heads"`
	Vocab        int     `json:"vocab_size"`
	RopeTheta    float64 `json:"rope_theta"`
	RMSEps       float64 `json:"rms_norm_eps"`
	TiedEmbed    bool    `json:"tie_word_embeddings"`
	QKVBias      bool    `json:"attention_bias"`
	MaxPositions int     `json:"max_position_embeddings"`
	// Arch is the Hugging Face model_type ("llama", "qwen2", "mistral"); it
	// only matters when writing config.json for other tools.
	Arch string `json:"model_type"`
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int { return c.Hidden / c.Heads }

// QDim is the width of the query projection's output (heads × headDim).
func (c Config) QDim() int { return c.Heads * c.HeadDim() }

// KVDim is the width of the key and value projections' outputs.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim() }

// Validate reports the first inconsistency in c, naming the field.
func (c Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{
		{"hidden_size", c.Hidden}, {"intermediate_size", c.Intermediate},
		{"num_hidden_layers", c.Layers}, {"num_attention_heads", c.Heads},
		{"num_key_value_heads", c.KVHeads}, {"vocab_size", c.Vocab},
		{"max_position_embeddings", c.MaxPositions},
	}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("model config: %s = %d, must be positive", p.name, p.v)
		}
	}
	if c.Hidden%c.Heads != 0 {
		return fmt.Errorf("model config: hidden_size %d is not divisible by num_attention_heads %d", c.Hidden, c.Heads)
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("model config: num_attention_heads %d is not divisible by num_key_value_heads %d", c.Heads, c.KVHeads)
	}
	if c.HeadDim()%2 != 0 {
		return fmt.Errorf("model config: head dim %d is odd; rotary embeddings need an even head dim", c.HeadDim())
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("model config: rope_theta = %g, must be positive", c.RopeTheta)
	}
	if c.RMSEps <= 0 {
		return fmt.Errorf("model config: rms_norm_eps = %g, must be positive", c.RMSEps)
	}
	return nil
}

// hfConfig is the subset of a Hugging Face config.json that peertune reads.
// Pointers distinguish "absent" from zero so that defaults match HF's.
type hfConfig struct {
	ModelType     string   `json:"model_type"`
	Architectures []string `json:"architectures"`
	Hidden        int      `json:"hidden_size"`
	Intermediate  int      `json:"intermediate_size"`
	Layers        int      `json:"num_hidden_layers"`
	Heads         int      `json:"num_attention_heads"`
	KVHeads       *int     `json:"num_key_value_heads"`
	HeadDim       *int     `json:"head_dim"`
	Vocab         int      `json:"vocab_size"`
	RopeTheta     *float64 `json:"rope_theta"`
	// transformers v5 writes rope_theta inside rope_parameters instead.
	RopeParameters *struct {
		RopeTheta *float64 `json:"rope_theta"`
		RopeType  string   `json:"rope_type"`
	} `json:"rope_parameters"`
	RMSEps           *float64 `json:"rms_norm_eps"`
	Tied             *bool    `json:"tie_word_embeddings"`
	AttentionBias    *bool    `json:"attention_bias"`
	MaxPositions     int      `json:"max_position_embeddings"`
	HiddenAct        string   `json:"hidden_act"`
	RopeScaling      any      `json:"rope_scaling"`
	MLPBias          *bool    `json:"mlp_bias"`
	SlidingWindow    any      `json:"sliding_window"`
	UseSlidingWindow *bool    `json:"use_sliding_window"`
}

// ParseHFConfig reads a Hugging Face config.json (llama, mistral, qwen2).
// name is used in error messages.
func ParseHFConfig(name string, data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%s: invalid JSON: %w", name, err)
	}
	c := Config{
		Hidden: h.Hidden, Intermediate: h.Intermediate, Layers: h.Layers,
		Heads: h.Heads, Vocab: h.Vocab, MaxPositions: h.MaxPositions,
		Arch: h.ModelType, RopeTheta: 10000, RMSEps: 1e-6, KVHeads: h.Heads,
	}
	switch h.ModelType {
	case "llama", "mistral":
	case "qwen2":
		c.QKVBias = true // Qwen2 always has q/k/v biases
	case "":
		return Config{}, fmt.Errorf("%s: model_type missing; peertune reads llama, mistral and qwen2 configs", name)
	default:
		return Config{}, fmt.Errorf("%s: model_type %q is not supported; peertune reads llama, mistral and qwen2 configs", name, h.ModelType)
	}
	if h.KVHeads != nil {
		c.KVHeads = *h.KVHeads
	}
	if h.RopeTheta != nil {
		c.RopeTheta = *h.RopeTheta
	}
	if rp := h.RopeParameters; rp != nil {
		if rp.RopeType != "" && rp.RopeType != "default" {
			return Config{}, fmt.Errorf("%s: rope_type %q is not supported; peertune implements plain RoPE only", name, rp.RopeType)
		}
		if rp.RopeTheta != nil {
			c.RopeTheta = *rp.RopeTheta
		}
	}
	if h.RMSEps != nil {
		c.RMSEps = *h.RMSEps
	}
	if h.Tied != nil {
		c.TiedEmbed = *h.Tied
	}
	if h.AttentionBias != nil && *h.AttentionBias {
		c.QKVBias = true
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("%s: hidden_act %q is not supported (peertune implements SwiGLU with silu)", name, h.HiddenAct)
	}
	if h.MLPBias != nil && *h.MLPBias {
		return Config{}, fmt.Errorf("%s: mlp_bias = true is not supported", name)
	}
	if h.HeadDim != nil && h.Heads > 0 && *h.HeadDim != h.Hidden/h.Heads {
		return Config{}, fmt.Errorf("%s: head_dim %d differs from hidden_size/num_attention_heads = %d; not supported", name, *h.HeadDim, h.Hidden/h.Heads)
	}
	if h.RopeScaling != nil {
		// Llama 3.1's "llama3" rope scaling changes long-context positions only;
		// peertune does not implement it, so say so rather than differ silently.
		return Config{}, fmt.Errorf("%s: rope_scaling is set; peertune implements plain RoPE only", name)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// MarshalHF renders c as a Hugging Face config.json that transformers loads.
func (c Config) MarshalHF() ([]byte, error) {
	arch := c.Arch
	if arch == "" {
		arch = "llama"
	}
	archName := map[string]string{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
	m := map[string]any{
		"model_type":              arch,
		"architectures":           []string{archName},
		"hidden_size":             c.Hidden,
		"intermediate_size":       c.Intermediate,
		"num_hidden_layers":       c.Layers,
		"num_attention_heads":     c.Heads,
		"num_key_value_heads":     c.KVHeads,
		"vocab_size":              c.Vocab,
		"rope_theta":              c.RopeTheta,
		"rms_norm_eps":            c.RMSEps,
		"tie_word_embeddings":     c.TiedEmbed,
		"max_position_embeddings": c.MaxPositions,
		"hidden_act":              "silu",
		"torch_dtype":             "float32",
	}
	if arch != "qwen2" {
		m["attention_bias"] = c.QKVBias
	}
	return json.MarshalIndent(m, "", "  ")
}

// LoadConfig resolves a preset name or reads a config.json path.
func LoadConfig(nameOrPath string) (Config, error) {
	if c, ok := Presets()[nameOrPath]; ok {
		return c, nil
	}
	data, err := os.ReadFile(nameOrPath)
	if err != nil {
		if os.IsNotExist(err) && !strings.ContainsAny(nameOrPath, "/.") {
			return Config{}, fmt.Errorf("unknown model %q: not a preset (%s) and no such file", nameOrPath, strings.Join(PresetNames(), ", "))
		}
		return Config{}, fmt.Errorf("read model config: %w", err)
	}
	return ParseHFConfig(nameOrPath, data)
}

// Presets are published architectures, from their Hugging Face config.json
// files, plus "tiny" for tests and quick benchmarks.
func Presets() map[string]Config {
	return map[string]Config{
		"tiny": {Hidden: 64, Intermediate: 176, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 272,
			RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 512, Arch: "llama"},
		// peertune-tiny is the architecture of the built-in base model
		// (trainer/tinybase): byte-level vocabulary (259 ids, padded to 272).
		"peertune-tiny": {Hidden: 128, Intermediate: 384, Layers: 4, Heads: 4, KVHeads: 2, Vocab: 272,
			RopeTheta: 10000, RMSEps: 1e-5, TiedEmbed: true, MaxPositions: 512, Arch: "llama"},
		"smollm2-135m": {Hidden: 576, Intermediate: 1536, Layers: 30, Heads: 9, KVHeads: 3, Vocab: 49152,
			RopeTheta: 100000, RMSEps: 1e-5, TiedEmbed: true, MaxPositions: 8192, Arch: "llama"},
		// Llama 3.2 1B: the ~1B shape of the GPU check (its "llama3" rope
		// scaling for long contexts is not modelled: the shape is what matters).
		"llama3.2-1b": {Hidden: 2048, Intermediate: 8192, Layers: 16, Heads: 32, KVHeads: 8, Vocab: 128256,
			RopeTheta: 500000, RMSEps: 1e-5, TiedEmbed: true, MaxPositions: 131072, Arch: "llama"},
		"llama2-7b": {Hidden: 4096, Intermediate: 11008, Layers: 32, Heads: 32, KVHeads: 32, Vocab: 32000,
			RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 4096, Arch: "llama"},
		"llama3-8b": {Hidden: 4096, Intermediate: 14336, Layers: 32, Heads: 32, KVHeads: 8, Vocab: 128256,
			RopeTheta: 500000, RMSEps: 1e-5, MaxPositions: 8192, Arch: "llama"},
		"llama3-70b": {Hidden: 8192, Intermediate: 28672, Layers: 80, Heads: 64, KVHeads: 8, Vocab: 128256,
			RopeTheta: 500000, RMSEps: 1e-5, MaxPositions: 8192, Arch: "llama"},
		"mistral-7b": {Hidden: 4096, Intermediate: 14336, Layers: 32, Heads: 32, KVHeads: 8, Vocab: 32000,
			RopeTheta: 1e6, RMSEps: 1e-5, MaxPositions: 32768, Arch: "mistral"},
		"qwen2.5-7b": {Hidden: 3584, Intermediate: 18944, Layers: 28, Heads: 28, KVHeads: 4, Vocab: 152064,
			RopeTheta: 1e6, RMSEps: 1e-6, QKVBias: true, MaxPositions: 32768, Arch: "qwen2"},
	}
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	var names []string
	for n := range Presets() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
