package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/model"
)

// BuiltinModel and BuiltinData name the tiny model and the telecom data that
// ship inside the binary; they are the defaults.
const (
	BuiltinModel = "builtin"
	BuiltinData  = "builtin"
	// BuiltinCorpus is the plain-text domain corpus the built-in model was
	// pretrained on (`make tiny-base`).
	BuiltinCorpus = "builtin:corpus"
)

// Config is one training job. Every field is a `peertune train` flag and a
// key of a --config YAML file (unknown keys are an error).
type Config struct {
	Model string `yaml:"model"` // "builtin", a preset (random init), or a directory with config.json + model.safetensors
	Init  string `yaml:"init"`  // "pretrained" (load weights) or "random" (presets, pretraining)
	Data  string `yaml:"data"`  // "builtin", "builtin:corpus", or a JSONL file
	// Format forces the JSONL format: auto, instruction, alpaca or chat.
	Format string `yaml:"format"`

	Method      string  `yaml:"method"` // lora | full
	LoRARank    int     `yaml:"lora_rank"`
	LoRAAlpha   float64 `yaml:"lora_alpha"`
	LoRADropout float64 `yaml:"lora_dropout"`
	LoRATargets string  `yaml:"lora_targets"`

	Steps       int     `yaml:"steps"`  // optimizer steps; 0 = derive from epochs
	Epochs      float64 `yaml:"epochs"` // used when steps is 0
	Batch       int     `yaml:"batch"`  // global batch, in sequences
	MicroBatch  int     `yaml:"micro_batch"`
	SeqLen      int     `yaml:"seq_len"`
	LR          float64 `yaml:"lr"`
	Warmup      int     `yaml:"warmup"`
	WeightDecay float64 `yaml:"weight_decay"`
	GradClip    float64 `yaml:"grad_clip"` // 0 = no clipping
	Seed        uint64  `yaml:"seed"`
	Recompute   bool    `yaml:"recompute"`
	// Precision: auto (bf16 on a GPU, f32 on the CPU), f32 or bf16 (GPU
	// only): see model.Options.Precision.
	Precision string `yaml:"precision"`

	EvalEvery    int     `yaml:"eval_every"` // 0 = never during training
	Patience     int     `yaml:"patience"`   // evaluations without improvement before stopping; 0 = never stop early
	EvalExamples int     `yaml:"eval_examples"`
	ValFraction  float64 `yaml:"val_fraction"`
	TestFraction float64 `yaml:"test_fraction"`

	TrainOnPrompt bool `yaml:"train_on_prompt"`
	Truncate      bool `yaml:"truncate"` // cut over-long examples (counted) instead of refusing them
	Pack          bool `yaml:"pack"`
	AllowOverlap  bool `yaml:"allow_overlap"`
	SkipInvalid   bool `yaml:"skip_invalid"`

	// CheckpointEvery writes a checkpoint every N steps (0: only when
	// stopped by a signal); Keep is how many to keep (0: all); Resume
	// continues from the newest valid checkpoint in Out/checkpoints.
	CheckpointEvery int  `yaml:"checkpoint_every"`
	Keep            int  `yaml:"keep"`
	Resume          bool `yaml:"resume"`

	// CheckEvery compares a checksum of the trainable state across ranks
	// every N steps (0: never); a mismatch stops training.
	CheckEvery int `yaml:"check_every"`

	Out string `yaml:"out"`
}

// DefaultConfig is what `peertune train` does with no flags: LoRA on the
// built-in model and data, sized to finish in a few minutes on 2 cores.
func DefaultConfig() Config {
	return Config{
		Model: BuiltinModel, Init: "pretrained", Data: BuiltinData, Format: "auto",
		Method: "lora", LoRARank: 16, LoRAAlpha: 32, LoRADropout: 0, LoRATargets: "all",
		Steps: 0, Epochs: 4, Batch: 16, MicroBatch: 16, SeqLen: 384,
		LR: 5e-3, Warmup: 20, WeightDecay: 0.0, GradClip: 1.0, Seed: 1,
		EvalEvery: 50, Patience: 3, EvalExamples: 100, ValFraction: 0.05, TestFraction: 0.05,
		CheckEvery: 10, Keep: 3, Out: "out", Precision: "auto",
	}
}

// LoadYAML overlays a YAML job file on c. Unknown keys are an error that names
// the key and line.
func (c *Config) LoadYAML(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read --config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Validate checks every setting before any work starts, naming the flag.
func (c *Config) Validate() error {
	if _, err := model.ParseMethod(c.Method); err != nil {
		return fmt.Errorf("--method: %w", err)
	}
	if c.Init != "pretrained" && c.Init != "random" {
		return fmt.Errorf("--init %q: want pretrained or random", c.Init)
	}
	if c.Method == "lora" {
		if c.LoRARank <= 0 {
			return fmt.Errorf("--lora-rank %d: must be at least 1", c.LoRARank)
		}
		if !(c.LoRAAlpha > 0) || math.IsInf(c.LoRAAlpha, 0) {
			return fmt.Errorf("--lora-alpha %g: must be positive", c.LoRAAlpha)
		}
		if c.LoRADropout < 0 || c.LoRADropout >= 1 || math.IsNaN(c.LoRADropout) {
			return fmt.Errorf("--lora-dropout %g: must be in [0, 1)", c.LoRADropout)
		}
		if _, err := model.ParseTargets(c.LoRATargets); err != nil {
			return fmt.Errorf("--lora-targets: %w", err)
		}
	}
	if _, err := c.ResolvePrecision(Device{CUDA: true, BF16: true}); err != nil { // the device is checked when it is known
		return err
	}
	switch {
	case c.Steps < 0:
		return fmt.Errorf("--steps %d: must not be negative", c.Steps)
	case c.Steps == 0 && !(c.Epochs > 0):
		return fmt.Errorf("--epochs %g: must be positive when --steps is not given", c.Epochs)
	case c.Batch <= 0:
		return fmt.Errorf("--batch %d: must be at least 1", c.Batch)
	case c.MicroBatch <= 0:
		return fmt.Errorf("--micro-batch %d: must be at least 1", c.MicroBatch)
	case c.SeqLen < 2:
		return fmt.Errorf("--seq-len %d: must be at least 2", c.SeqLen)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("--lr %g: must be a positive number", c.LR)
	case c.Warmup < 0:
		return fmt.Errorf("--warmup %d: must not be negative", c.Warmup)
	case c.WeightDecay < 0 || math.IsNaN(c.WeightDecay):
		return fmt.Errorf("--weight-decay %g: must not be negative", c.WeightDecay)
	case c.GradClip < 0 || math.IsNaN(c.GradClip):
		return fmt.Errorf("--grad-clip %g: must not be negative (0 disables clipping)", c.GradClip)
	case c.EvalEvery < 0:
		return fmt.Errorf("--eval-every %d: must not be negative (0 = never)", c.EvalEvery)
	case c.Patience < 0:
		return fmt.Errorf("--patience %d: must not be negative", c.Patience)
	case c.EvalExamples < 0:
		return fmt.Errorf("--eval-examples %d: must not be negative", c.EvalExamples)
	case c.ValFraction < 0 || c.TestFraction < 0 || c.ValFraction+c.TestFraction >= 1:
		return fmt.Errorf("--val-fraction %g + --test-fraction %g: each must be ≥ 0 and together < 1", c.ValFraction, c.TestFraction)
	case c.CheckpointEvery < 0:
		return fmt.Errorf("--checkpoint-every %d: must not be negative (0: only on SIGTERM)", c.CheckpointEvery)
	case c.Keep < 0:
		return fmt.Errorf("--keep %d: must not be negative (0: keep all)", c.Keep)
	case c.CheckEvery < 0:
		return fmt.Errorf("--check-every %d: must not be negative", c.CheckEvery)
	case c.Out == "":
		return fmt.Errorf("--out: an output directory is required")
	}
	return nil
}

// Canonical keeps the settings that determine the trained model and zeroes
// the rest: where outputs go, checkpoint cadence, resuming, how many examples
// are scored, replica-check cadence, and how a node splits its share into
// micro-batches or recomputes activations (the result does not depend on
// those up to float rounding; DESIGN invariant 2). Nodes of one job, and a
// resumed run and its checkpoint, must agree on the canonical config.
func (c Config) Canonical() Config {
	c.Out, c.Resume, c.CheckpointEvery, c.Keep = "", false, 0, 0
	c.EvalExamples, c.CheckEvery, c.MicroBatch, c.Recompute = 0, 0, 0, false
	// What --precision resolves to is what matters (cmd adds it to the job
	// hash): auto and bf16 on a bf16 GPU compute the same thing.
	c.Precision = ""
	return c
}

// CanonicalJSON is the canonical config as JSON (what hashes are taken of).
func (c Config) CanonicalJSON() []byte {
	data, _ := json.Marshal(c.Canonical()) // a struct of plain fields always marshals
	return data
}

// Hash identifies the job: hex SHA-256 of the canonical config.
func (c Config) Hash() string {
	sum := sha256.Sum256(c.CanonicalJSON())
	return hex.EncodeToString(sum[:])
}

// Device says what a node computes on, for ResolvePrecision.
type Device struct {
	CUDA bool // a GPU (the CUDA backend), not the CPU
	// BF16 says the GPU has bf16 tensor cores (compute capability 8.0 and
	// later: Ampere, Hopper, Blackwell); cuBLAS refuses bf16 GEMMs below.
	BF16 bool
}

// ResolvePrecision is the model precision on dev: --precision, with auto
// meaning bf16 on a GPU with bf16 tensor cores and f32 otherwise.
func (c *Config) ResolvePrecision(dev Device) (kernels.DType, error) {
	switch c.Precision {
	case "auto", "":
		if dev.CUDA && dev.BF16 {
			return kernels.BF16, nil
		}
		return kernels.F32, nil
	case "f32", "fp32", "float32":
		return kernels.F32, nil
	case "bf16", "bfloat16":
		if !dev.CUDA {
			return 0, fmt.Errorf("--precision %s needs a GPU (--device cuda): the CPU backend computes in float32", c.Precision)
		}
		if !dev.BF16 {
			return 0, fmt.Errorf("--precision %s: this GPU has no bf16 tensor cores (compute capability below 8.0); use --precision f32", c.Precision)
		}
		return kernels.BF16, nil
	}
	return 0, fmt.Errorf("--precision %q: want auto, f32 or bf16", c.Precision)
}
