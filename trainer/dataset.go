package trainer

import (
	"fmt"
	"hash/fnv"

	"go.uber.org/zap"

	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/data/telecom"
)

// Dataset is a job's data after splitting, the contamination check and
// tokenisation. Train and Val feed the loss; Test holds the held-out examples
// that are scored by generation (exact match and format accuracy) when the
// task knows how to score them.
type Dataset struct {
	Train, Val []data.Sequence
	Test       []data.Example
	// Scored is true when Test can be scored (the built-in telecom tasks).
	Scored bool

	Read     data.ReadStats
	Encoded  data.EncodeStats
	Overlap  data.OverlapReport
	Examples struct{ Train, Val, Test int }
}

// LoadDataset reads (or generates) the data, splits it by a stable hash of
// each normalised example before anything else, refuses contamination between
// training and evaluation data unless allowed, and tokenises.
func LoadDataset(cfg *Config, tok data.Tokenizer, log *zap.Logger) (*Dataset, error) {
	if cfg.Data == BuiltinCorpus {
		return corpusDataset(cfg, tok)
	}
	ds := &Dataset{}
	var examples []data.Example
	if cfg.Data == BuiltinData {
		examples = telecom.Generate(telecom.DefaultSeed, telecom.DefaultN)
		ds.Scored = true
	} else {
		var err error
		examples, ds.Read, err = data.ReadJSONL(cfg.Data, data.ReadOptions{Format: cfg.Format, SkipInvalid: cfg.SkipInvalid})
		if err != nil {
			return nil, err
		}
		if ds.Read.Skipped > 0 {
			log.Warn("skipped invalid JSONL lines", zap.String("file", cfg.Data), zap.Int("skipped", ds.Read.Skipped))
		}
	}
	splits, err := data.Split(examples, data.Fractions{Val: cfg.ValFraction, Test: cfg.TestFraction}, cfg.Seed)
	if err != nil {
		return nil, err
	}
	ds.Examples.Train, ds.Examples.Val, ds.Examples.Test = len(splits.Train), len(splits.Val), len(splits.Test)
	if len(splits.Train) == 0 {
		return nil, fmt.Errorf("%s: no training examples after the split (%d examples in all)", cfg.Data, len(examples))
	}
	eval := append(append([]data.Example(nil), splits.Val...), splits.Test...)
	ds.Overlap = data.CheckOverlap(splits.Train, eval, data.OverlapOptions{})
	if err := ds.Overlap.Err(); err != nil {
		if !cfg.AllowOverlap {
			return nil, err
		}
		log.Warn("training despite overlap (--allow-overlap)", zap.String("overlap", ds.Overlap.String()))
	}
	enc := data.EncodeOptions{SeqLen: cfg.SeqLen, TrainOnPrompt: cfg.TrainOnPrompt, Truncate: cfg.Truncate}
	var st data.EncodeStats
	if ds.Train, ds.Encoded, err = data.EncodeAll(splits.Train, tok, enc); err != nil {
		return nil, fmt.Errorf("training data: %w", err)
	}
	if len(splits.Val) > 0 {
		if ds.Val, st, err = data.EncodeAll(splits.Val, tok, enc); err != nil {
			return nil, fmt.Errorf("validation data: %w", err)
		}
	}
	if ds.Encoded.Truncated+st.Truncated > 0 {
		log.Warn("truncated over-long examples (--truncate)", zap.Int("train", ds.Encoded.Truncated), zap.Int("val", st.Truncated))
	}
	if len(ds.Train) == 0 {
		return nil, fmt.Errorf("%s: no training sequences left after tokenisation", cfg.Data)
	}
	ds.Test = splits.Test
	return ds, nil
}

// corpusDataset cuts the built-in pretraining corpus into sequences of
// SeqLen tokens with a loss on every token; one chunk in twenty (by a hash of
// its text) is held out for validation.
func corpusDataset(cfg *Config, tok data.Tokenizer) (*Dataset, error) {
	text := telecom.Corpus(telecom.DefaultSeed, telecom.DefaultCorpusBytes)
	ids := tok.Encode(text)
	ds := &Dataset{}
	// Every sequence starts with BOS, as every fine-tuning prompt does, so
	// the base model knows the token it will always see first.
	n := cfg.SeqLen - 1
	for off := 0; off+n+1 <= len(ids); off += n {
		chunk := ids[off : off+n+1]
		toks := append([]int32{tok.BOS()}, chunk[:n]...)
		seq := data.Sequence{Tokens: toks, Labels: append([]int32(nil), chunk...), ID: fmt.Sprintf("corpus-%d", off)}
		h := fnv.New32a()
		for _, t := range chunk {
			h.Write([]byte{byte(t), byte(t >> 8)})
		}
		if h.Sum32()%20 == 0 {
			ds.Val = append(ds.Val, seq)
		} else {
			ds.Train = append(ds.Train, seq)
		}
	}
	if len(ds.Train) == 0 {
		return nil, fmt.Errorf("built-in corpus: %d tokens make no sequence of --seq-len %d", len(ids), cfg.SeqLen)
	}
	ds.Examples.Train, ds.Examples.Val = len(ds.Train), len(ds.Val)
	return ds, nil
}
