package trainer

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/peertune/peertune/trainer/data"
	"github.com/peertune/peertune/trainer/data/telecom"
)

// TestScoreExamplesMatchesGreedyDecoding: the shortcuts in ScoreExamples
// (teacher forcing, decoding only from the first wrong token, stopping rows
// whose score is settled) must give exactly the scores of plain greedy
// decoding, for an untrained model, and for examples a trained model has
// learned (shortcut taken) and examples it has not.
func TestScoreExamplesMatchesGreedyDecoding(t *testing.T) {
	all := telecom.Generate(telecom.DefaultSeed, 40)
	learned, unseen := all[:8], all[8:16]
	path := filepath.Join(t.TempDir(), "learn.jsonl")
	if err := data.WriteJSONL(path, learned); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, path)
	cfg.Method, cfg.Steps, cfg.Batch, cfg.MicroBatch, cfg.LR, cfg.Warmup = "full", 150, 8, 8, 1e-2, 5
	cfg.ValFraction, cfg.TestFraction, cfg.SeqLen = 0, 0, 256
	tr := newTestTrainer(t, cfg)
	tok := data.ByteTokenizer{}
	examples := append(append([]data.Example(nil), learned...), unseen...)
	// Untrained, the model's answers are settled (telecom.Settled) after a
	// token or two, and decoding stops early: the scores must not change.
	checkScoresMatchGreedy(t, tr, tok, examples, cfg.SeqLen)
	for s := 1; s <= cfg.Steps; s++ {
		if _, err := tr.Step(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	want := checkScoresMatchGreedy(t, tr, tok, examples, cfg.SeqLen)
	if want.Exact == 0 || want.Exact == len(examples) {
		t.Fatalf("exact %d of %d: the test needs both learned and unlearned examples", want.Exact, len(examples))
	}
	t.Logf("exact %d, format %d of %d", want.Exact, want.FormatOK, len(examples))
}

// checkScoresMatchGreedy scores examples with ScoreExamples and with plain
// greedy decoding, one example at a time, and fails unless they agree.
func checkScoresMatchGreedy(t *testing.T, tr *Trainer, tok data.Tokenizer, examples []data.Example, seqLen int) telecom.Report {
	t.Helper()
	got, err := ScoreExamples(context.Background(), tr.m, tok, examples, seqLen)
	if err != nil {
		t.Fatal(err)
	}
	// A cancelled context stops it before any work, with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ScoreExamples(ctx, tr.m, tok, examples, seqLen); !errors.Is(err, context.Canceled) {
		t.Errorf("ScoreExamples with a cancelled context: %v", err)
	}
	var want telecom.Report
	for _, ex := range examples {
		out, err := Generate(tr.m, [][]int32{data.PromptTokens(ex, tok)}, GenerateOptions{
			MaxNew: len(tok.Encode(ex.Response)) + 8, EOS: tok.EOS(), PAD: tok.PAD(), MaxLen: seqLen})
		if err != nil {
			t.Fatal(err)
		}
		want.Add(ex, tok.Decode(out[0]))
	}
	if got.Report.Exact != want.Exact || got.Report.FormatOK != want.FormatOK || got.N != len(examples) ||
		!reflect.DeepEqual(got.Report.ByTask, want.ByTask) {
		t.Fatalf("shortcut: %d scored, exact %d format %d; greedy decoding: exact %d format %d",
			got.N, got.Report.Exact, got.Report.FormatOK, want.Exact, want.FormatOK)
	}
	return want
}
