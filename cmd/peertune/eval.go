package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/data"
)

func newEvalCmd(g *globalOptions) *cobra.Command {
	cfg := trainer.DefaultConfig()
	var adapter, split, device string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Loss, perplexity, exact match and format accuracy of a model (+ adapter)",
		Long: `Evaluates a base model, optionally with a PEFT LoRA adapter, on data:
loss and perplexity over the responses, and for the built-in telecom tasks the
exact match and format accuracy of greedy answers.

--data builtin evaluates the held-out test split that 'peertune train' makes
with the same --seed and fractions. A JSONL file is evaluated whole (--split
all) or split the way training splits it (--split test).`,
		Example: `  peertune eval --adapter out
  peertune eval --model ./llama-dir --adapter ./adapter --data eval.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if split != "all" && split != "test" {
				return fmt.Errorf("--split %q: want all or test", split)
			}
			if cfg.Data == trainer.BuiltinData {
				split = "test"
			}
			var examples []data.Example
			var err error
			if split == "test" {
				examples, err = trainer.HeldOut(&cfg)
			} else {
				examples, _, err = data.ReadJSONL(cfg.Data, data.ReadOptions{Format: cfg.Format})
			}
			if err != nil {
				return err
			}
			be, err := newBackend(g, device)
			if err != nil {
				return err
			}
			m, _, err := trainer.LoadForInference(be, cfg.Model, adapter)
			if err != nil {
				return err
			}
			defer m.Free()
			rep, err := trainer.Evaluate(cmd.Context(), m, data.ByteTokenizer{}, examples, cfg.SeqLen, cfg.MicroBatch, cfg.EvalExamples)
			if err != nil {
				return err
			}
			if asJSON {
				raw, _ := json.Marshal(rep)
				fmt.Fprintln(cmd.OutOrStdout(), string(raw))
				return nil
			}
			var b strings.Builder
			fmt.Fprintf(&b, "examples %d, target tokens %d\nloss %.4f, perplexity %.3f\n", rep.Examples, rep.TargetTokens, rep.Loss, rep.Perplexity)
			if rep.ExactMatch != nil {
				fmt.Fprintf(&b, "exact match %.1f%%, format accuracy %.1f%% (%d scored by greedy decoding)\n", 100**rep.ExactMatch, 100**rep.FormatAccuracy, rep.Scored)
			}
			fmt.Fprint(cmd.OutOrStdout(), b.String())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Model, "model", cfg.Model, `"builtin" or a directory with config.json + model.safetensors`)
	f.StringVar(&adapter, "adapter", "", "directory with adapter_config.json + adapter_model.safetensors (PEFT format)")
	f.StringVar(&cfg.Data, "data", cfg.Data, `"builtin" or a JSONL file`)
	f.StringVar(&cfg.Format, "format", cfg.Format, "JSONL format: auto, instruction, alpaca or chat")
	f.StringVar(&split, "split", "all", "all (the whole file) or test (the held-out split training makes)")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "split seed (as given to train)")
	f.Float64Var(&cfg.ValFraction, "val-fraction", cfg.ValFraction, "as given to train")
	f.Float64Var(&cfg.TestFraction, "test-fraction", cfg.TestFraction, "as given to train")
	f.IntVar(&cfg.SeqLen, "seq-len", cfg.SeqLen, "maximum tokens per example")
	f.IntVar(&cfg.MicroBatch, "micro-batch", cfg.MicroBatch, "examples per forward pass")
	f.IntVar(&cfg.EvalExamples, "examples", cfg.EvalExamples, "examples scored by generation (built-in tasks)")
	f.BoolVar(&asJSON, "json", false, "print one JSON line")
	f.StringVar(&device, "device", "auto", "auto, cpu or cuda")
	return cmd
}

func newGenerateCmd(g *globalOptions) *cobra.Command {
	var modelName, adapter, prompt, device string
	var maxNew int
	var temp float64
	var seed uint64
	var raw bool
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate a response with a model (+ adapter)",
		Long: `Generates a continuation. By default the prompt is an instruction and is
wrapped in the same template training uses ('### Instruction: ... ### Response:');
--raw feeds it as plain text. Greedy unless --temperature > 0.`,
		Example: `  peertune generate --adapter out --prompt "Compute the SNR for received power -80 dBm and noise -100 dBm"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if prompt == "" {
				return fmt.Errorf("--prompt is required")
			}
			if maxNew <= 0 {
				return fmt.Errorf("--max-new %d: must be positive", maxNew)
			}
			if temp < 0 {
				return fmt.Errorf("--temperature %g: must not be negative", temp)
			}
			be, err := newBackend(g, device)
			if err != nil {
				return err
			}
			m, _, err := trainer.LoadForInference(be, modelName, adapter)
			if err != nil {
				return err
			}
			defer m.Free()
			tok := data.ByteTokenizer{}
			ids := append([]int32{tok.BOS()}, tok.Encode(prompt)...)
			if !raw {
				ids = data.PromptTokens(data.Example{Format: data.FormatInstruction, Instruction: prompt}, tok)
			}
			out, err := trainer.Generate(m, [][]int32{ids}, trainer.GenerateOptions{MaxNew: maxNew, Temperature: temp, Seed: seed,
				EOS: tok.EOS(), PAD: tok.PAD(), MaxLen: m.Cfg.MaxPositions})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Decode(out[0]))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelName, "model", trainer.BuiltinModel, `"builtin" or a directory with config.json + model.safetensors`)
	f.StringVar(&adapter, "adapter", "", "PEFT adapter directory")
	f.StringVar(&prompt, "prompt", "", "the instruction (or raw text with --raw)")
	f.BoolVar(&raw, "raw", false, "no template: continue the prompt text as is")
	f.IntVar(&maxNew, "max-new", 64, "new tokens at most")
	f.Float64Var(&temp, "temperature", 0, "sampling temperature (0: greedy)")
	f.Uint64Var(&seed, "seed", 1, "sampling seed")
	f.StringVar(&device, "device", "auto", "auto, cpu or cuda")
	return cmd
}
