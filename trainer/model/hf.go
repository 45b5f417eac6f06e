package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/peertune/peertune/internal/atomicfile"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/model/safetensors"
)

// LoadBase reads every base weight from a Hugging Face safetensors file into
// Base. Each tensor must exist with exactly the shape the config implies; a
// checkpoint with tied embeddings may still carry lm_head.weight, which is
// then ignored.
func (m *Model) LoadBase(path string) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return m.LoadBaseFile(f)
}

// LoadBaseFile is LoadBase for an already opened (or in-memory) file. It
// copies tensor by tensor through one host buffer of the largest tensor, so
// the host holds that buffer (as f32) besides the file, not a second copy of
// the whole model, and reading leaves no per-tensor garbage for the
// collector to lag behind (the CPU backend's CopyIn copies into the model's
// own memory; a GPU backend may still stage a bf16 copy per tensor).
func (m *Model) LoadBaseFile(f *safetensors.File) error {
	largest := 0
	for _, t := range m.BaseLayout.Tensors {
		largest = max(largest, t.Size())
	}
	host := make([]float32, largest)
	for _, t := range m.BaseLayout.Tensors {
		v := host[:t.Size()]
		if err := f.Float32Into(v, t.Name, t.Shape...); err != nil {
			return err
		}
		if err := m.be.CopyIn(m.Base.Slice(t.Offset, t.Size()), v); err != nil {
			return fmt.Errorf("%s: copy %s in: %w", f.Path, t.Name, err)
		}
	}
	return nil
}

// SaveBase writes the base weights as model.safetensors and config.json in
// dir, in Hugging Face's layout (what `--method full` produces).
func (m *Model) SaveBase(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg, err := m.Cfg.MarshalHF()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		return err
	}
	return m.saveLayout(filepath.Join(dir, "model.safetensors"), m.BaseLayout, m.Base, map[string]string{"format": "pt"})
}

func (m *Model) saveLayout(path string, lay *Layout, buf kernels.Buffer, meta map[string]string) error {
	host := make([]float32, lay.Total)
	if err := m.be.CopyOut(host, buf); err != nil {
		return err
	}
	ts := make([]safetensors.Tensor, len(lay.Tensors))
	for i, t := range lay.Tensors {
		ts[i] = safetensors.Tensor{Name: t.Name, Shape: t.Shape, Data: host[t.Offset : t.Offset+t.Size()]}
	}
	return safetensors.Write(path, ts, safetensors.F32, meta)
}

// PEFTConfig is the subset of PEFT's adapter_config.json that peertune writes
// and reads.
type PEFTConfig struct {
	PeftType          string   `json:"peft_type"`
	TaskType          string   `json:"task_type"`
	R                 int      `json:"r"`
	LoraAlpha         float64  `json:"lora_alpha"`
	LoraDropout       float64  `json:"lora_dropout"`
	TargetModules     []string `json:"target_modules"`
	Bias              string   `json:"bias"`
	FanInFanOut       bool     `json:"fan_in_fan_out"`
	InferenceMode     bool     `json:"inference_mode"`
	UseRSLoRA         bool     `json:"use_rslora"`
	UseDoRA           bool     `json:"use_dora"`
	BaseModelName     string   `json:"base_model_name_or_path"`
	ModulesToSave     []string `json:"modules_to_save"`
	InitLoraWeights   bool     `json:"init_lora_weights"`
	LayersToTransform any      `json:"layers_to_transform"`
	RankPattern       any      `json:"rank_pattern"`
	AlphaPattern      any      `json:"alpha_pattern"`
}

// ReadPEFTConfig reads adapter_config.json and turns it into a LoRAConfig,
// refusing the PEFT features peertune does not implement.
func ReadPEFTConfig(path string) (LoRAConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return LoRAConfig{}, err
	}
	var pc PEFTConfig
	if err := json.Unmarshal(data, &pc); err != nil {
		return LoRAConfig{}, fmt.Errorf("%s: invalid JSON: %w", path, err)
	}
	if pc.PeftType != "" && pc.PeftType != "LORA" {
		return LoRAConfig{}, fmt.Errorf("%s: peft_type %q: only LORA adapters are supported", path, pc.PeftType)
	}
	switch {
	case pc.UseRSLoRA:
		return LoRAConfig{}, fmt.Errorf("%s: use_rslora is not supported", path)
	case pc.UseDoRA:
		return LoRAConfig{}, fmt.Errorf("%s: use_dora is not supported", path)
	case pc.FanInFanOut:
		return LoRAConfig{}, fmt.Errorf("%s: fan_in_fan_out is not supported", path)
	case pc.Bias != "" && pc.Bias != "none":
		return LoRAConfig{}, fmt.Errorf("%s: bias %q is not supported (only none)", path, pc.Bias)
	case len(pc.ModulesToSave) > 0:
		return LoRAConfig{}, fmt.Errorf("%s: modules_to_save is not supported", path)
	case nonEmptyPattern(pc.RankPattern) || nonEmptyPattern(pc.AlphaPattern) || pc.LayersToTransform != nil:
		return LoRAConfig{}, fmt.Errorf("%s: per-layer rank/alpha patterns and layers_to_transform are not supported", path)
	}
	targets, err := ParseTargets(strings.Join(pc.TargetModules, ","))
	if err != nil {
		return LoRAConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	lc := LoRAConfig{Rank: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, Targets: targets}
	if err := lc.Validate(); err != nil {
		return LoRAConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return lc, nil
}

func nonEmptyPattern(v any) bool {
	if m, ok := v.(map[string]any); ok {
		return len(m) > 0
	}
	return v != nil
}

// SaveAdapter writes adapter_config.json and adapter_model.safetensors in
// PEFT's format and key names, so PeftModel.from_pretrained(base, dir) loads it.
func (m *Model) SaveAdapter(dir, baseModel string) error {
	if m.Opts.Method != MethodLoRA {
		return fmt.Errorf("SaveAdapter: model is not in LoRA mode")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	l := m.Opts.LoRA
	var targets []string
	for _, p := range l.Targets {
		targets = append(targets, p.String())
	}
	sort.Strings(targets)
	pc := PEFTConfig{
		PeftType: "LORA", TaskType: "CAUSAL_LM", R: l.Rank, LoraAlpha: l.Alpha, LoraDropout: l.Dropout,
		TargetModules: targets, Bias: "none", InferenceMode: true, BaseModelName: baseModel, InitLoraWeights: true,
		RankPattern: map[string]any{}, AlphaPattern: map[string]any{},
	}
	data, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "adapter_config.json"), data, 0o644); err != nil {
		return err
	}
	return m.saveLayout(filepath.Join(dir, "adapter_model.safetensors"), m.TrainLayout, m.Params, map[string]string{"format": "pt"})
}

// LoadAdapter reads PEFT adapter weights (adapter_model.safetensors) into
// Params. The model's LoRA config must match the adapter's (use
// ReadPEFTConfig to build it).
func (m *Model) LoadAdapter(path string) error {
	if m.Opts.Method != MethodLoRA {
		return fmt.Errorf("LoadAdapter: model is not in LoRA mode")
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	host := make([]float32, m.TrainLayout.Total)
	for _, t := range m.TrainLayout.Tensors {
		if err := f.Float32Into(host[t.Offset:t.Offset+t.Size()], t.Name, t.Shape...); err != nil {
			return err
		}
	}
	return m.be.CopyIn(m.Params, host)
}
