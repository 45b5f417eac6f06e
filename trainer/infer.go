package trainer

import (
	"context"
	"fmt"
	"math"
	"path/filepath"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/data/telecom"
	"github.com/peertune/peertune/trainer/model"
)

// LoadForInference loads a base model (see ResolveModel) and, when adapterDir
// is not empty, a PEFT LoRA adapter from it (adapter_config.json and
// adapter_model.safetensors).
func LoadForInference(be kernels.Backend, modelName, adapterDir string) (*model.Model, ModelSource, error) {
	src, err := ResolveModel(modelName, "pretrained", 0)
	if err != nil {
		return nil, src, err
	}
	opts := model.Options{Method: model.MethodFull}
	if adapterDir != "" {
		lc, err := model.ReadPEFTConfig(filepath.Join(adapterDir, "adapter_config.json"))
		if err != nil {
			return nil, src, fmt.Errorf("--adapter: %w", err)
		}
		opts = model.Options{Method: model.MethodLoRA, LoRA: lc}
	}
	m, err := model.New(be, src.Config, opts)
	if err != nil {
		return nil, src, err
	}
	if err := src.Load(m); err != nil {
		m.Free()
		return nil, src, fmt.Errorf("load model %s: %w", src.Name, err)
	}
	if adapterDir != "" {
		if err := m.LoadAdapter(filepath.Join(adapterDir, "adapter_model.safetensors")); err != nil {
			m.Free()
			return nil, src, fmt.Errorf("--adapter: %w", err)
		}
	}
	return m, src, nil
}

// EvalReport is what `peertune eval` prints.
type EvalReport struct {
	Examples       int      `json:"examples"`
	TargetTokens   int      `json:"target_tokens"`
	Loss           float64  `json:"loss"`
	Perplexity     float64  `json:"perplexity"`
	Scored         int      `json:"scored"`
	ExactMatch     *float64 `json:"exact_match"`
	FormatAccuracy *float64 `json:"format_accuracy"`
}

// Evaluate computes loss and perplexity over examples and, for the built-in
// telecom tasks, exact match and format accuracy of greedy answers (at most
// maxScored examples; 0 = none).
func Evaluate(ctx context.Context, m *model.Model, tok data.Tokenizer, examples []data.Example, seqLen, microBatch, maxScored int) (EvalReport, error) {
	seqs, _, err := data.EncodeAll(examples, tok, data.EncodeOptions{SeqLen: seqLen})
	if err != nil {
		return EvalReport{}, err
	}
	var sum float64
	var n int
	for i := 0; i < len(seqs); i += microBatch {
		if err := ctx.Err(); err != nil {
			return EvalReport{}, err
		}
		s, c, err := m.Loss(makeBatch(seqs[i:min(i+microBatch, len(seqs))], tok.PAD()))
		if err != nil {
			return EvalReport{}, err
		}
		sum += s
		n += c
	}
	r := EvalReport{Examples: len(examples), TargetTokens: n}
	if n > 0 {
		r.Loss = sum / float64(n)
		r.Perplexity = math.Exp(r.Loss)
	}
	var scorable []data.Example
	for _, ex := range examples {
		if _, ok := telecom.FormatPattern(telecom.TaskOf(ex)); ok && len(scorable) < maxScored {
			scorable = append(scorable, ex)
		}
	}
	if len(scorable) > 0 {
		sc, err := ScoreExamples(ctx, m, tok, scorable, seqLen)
		if err != nil {
			return r, err
		}
		r.Scored = sc.N
		r.ExactMatch, r.FormatAccuracy = &sc.ExactMatch, &sc.FormatAccuracy
	}
	return r, nil
}

// HeldOut returns the test split of the data as a training job with the same
// seed and fractions would make it (so `peertune eval` scores the examples that
// training never saw).
func HeldOut(cfg *Config) ([]data.Example, error) {
	var examples []data.Example
	if cfg.Data == BuiltinData {
		examples = telecom.Generate(telecom.DefaultSeed, telecom.DefaultN)
	} else {
		var err error
		if examples, _, err = data.ReadJSONL(cfg.Data, data.ReadOptions{Format: cfg.Format, SkipInvalid: cfg.SkipInvalid}); err != nil {
			return nil, err
		}
	}
	s, err := data.Split(examples, data.Fractions{Val: cfg.ValFraction, Test: cfg.TestFraction}, cfg.Seed)
	if err != nil {
		return nil, err
	}
	return s.Test, nil
}
