package tinybase_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/model"
	"github.com/peertune/peertune/trainer/model/safetensors"
	"github.com/peertune/peertune/trainer/tinybase"
)

// TestRecipeRuns runs the pretraining recipe on a tiny budget so that it
// cannot rot: the job file parses, the corpus loads, full training lowers the
// loss, and the output loads as a base model with the shipped architecture.
func TestRecipeRuns(t *testing.T) {
	cfg := trainer.DefaultConfig()
	if err := cfg.LoadYAML("recipe.yaml"); err != nil {
		t.Fatal(err)
	}
	cfg.Steps, cfg.Warmup, cfg.EvalEvery, cfg.Batch = 6, 1, 3, 8
	cfg.Out = t.TempDir()
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	sum, err := trainer.RunJob(context.Background(), cfg, be, &collective.Single{}, zap.NewNop(),
		trainer.JobIO{OnStep: func(s trainer.StepStats) { losses = append(losses, s.Loss) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 6 || !(losses[5] < losses[0]) {
		t.Fatalf("recipe did not lower the loss: %v", losses)
	}
	if *sum.Eval.ValLossAfter >= *sum.Eval.ValLossBefore {
		t.Fatalf("validation loss %g -> %g", *sum.Eval.ValLossBefore, *sum.Eval.ValLossAfter)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := model.ParseHFConfig("config.json", raw)
	if err != nil {
		t.Fatal(err)
	}
	shipped, _ := tinybase.Files()
	want, err := model.ParseHFConfig("shipped config.json", shipped)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("recipe makes %+v, the shipped model is %+v", got, want)
	}
	if _, err := safetensors.Open(filepath.Join(cfg.Out, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
}

// TestShippedModelLoads: the embedded weights match the embedded config.
func TestShippedModelLoads(t *testing.T) {
	cfgJSON, weights := tinybase.Files()
	cfg, err := model.ParseHFConfig("config.json", cfgJSON)
	if err != nil {
		t.Fatal(err)
	}
	if len(weights) > 8<<20 {
		t.Fatalf("shipped model is %d bytes; keep it under 8 MiB", len(weights))
	}
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(be, cfg, model.Options{Method: model.MethodFull})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	f, err := safetensors.Parse("model.safetensors", weights)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadBaseFile(f); err != nil {
		t.Fatal(err)
	}
}
