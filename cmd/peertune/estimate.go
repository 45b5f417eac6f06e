package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/peertune/peertune/node/gpu"
	"github.com/peertune/peertune/trainer/memory"
	"github.com/peertune/peertune/trainer/model"
)

// memFlags are the flags estimate and params share: what the estimate
// depends on.
type memFlags struct {
	modelName, method, targets, device, baseDType, actDType string
	rank, microBatch, seqLen, threads                       int
	dropout                                                 float64
	recompute, asJSON                                       bool
}

func (f *memFlags) register(cmd *cobra.Command, defaultMethod string) {
	fl := cmd.Flags()
	fl.StringVar(&f.modelName, "model", "llama3-8b", fmt.Sprintf("preset %v or a Hugging Face config.json", model.PresetNames()))
	fl.StringVar(&f.method, "method", defaultMethod, "lora, qlora or full")
	fl.IntVar(&f.rank, "lora-rank", 16, "LoRA rank")
	fl.StringVar(&f.targets, "lora-targets", "all", "LoRA target modules (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all)")
	fl.Float64Var(&f.dropout, "lora-dropout", 0, "LoRA dropout (above 0 adds two activation-sized buffers)")
	fl.IntVar(&f.microBatch, "micro-batch", 1, "sequences per forward/backward")
	fl.IntVar(&f.seqLen, "seq-len", 512, "tokens per sequence")
	fl.BoolVar(&f.recompute, "recompute", false, "recompute activations in the backward pass (keeps one layer's)")
	fl.StringVar(&f.device, "device", "auto", "cpu, cuda, or auto (cuda when NVML sees a GPU)")
	fl.StringVar(&f.baseDType, "base-dtype", "auto", "frozen base weights: auto, f32, bf16 (GPU) or nf4 (qlora)")
	fl.StringVar(&f.actDType, "act-dtype", "auto", "activations: auto (bf16 on cuda, f32 on cpu), f32 or bf16")
	fl.IntVar(&f.threads, "threads", 0, "CPU worker threads (0: GOMAXPROCS)")
	fl.BoolVar(&f.asJSON, "json", false, "print one JSON line")
}

// resolve turns the flags into a config and options.
func (f *memFlags) resolve(ctx context.Context) (model.Config, memory.Options, error) {
	cfg, err := model.LoadConfig(f.modelName)
	if err != nil {
		return model.Config{}, memory.Options{}, fmt.Errorf("--model: %w", err)
	}
	meth, err := memory.ParseMethod(f.method)
	if err != nil {
		return model.Config{}, memory.Options{}, fmt.Errorf("--method: %w", err)
	}
	o := memory.Options{Method: meth, MicroBatch: f.microBatch, SeqLen: f.seqLen, Recompute: f.recompute, Threads: f.threads}
	if meth != memory.Full {
		tg, err := model.ParseTargets(f.targets)
		if err != nil {
			return model.Config{}, memory.Options{}, fmt.Errorf("--lora-targets: %w", err)
		}
		o.LoRA = model.LoRAConfig{Rank: f.rank, Alpha: 2 * float64(f.rank), Dropout: f.dropout, Targets: tg}
	}
	if o.BaseDType, err = memory.ParseDType(f.baseDType); err != nil {
		return model.Config{}, memory.Options{}, fmt.Errorf("--base-dtype: %w", err)
	}
	if o.ActDType, err = memory.ParseDType(f.actDType); err != nil {
		return model.Config{}, memory.Options{}, fmt.Errorf("--act-dtype: %w", err)
	}
	if f.device == "auto" {
		o.Device = memory.CPU
		if inv, err := gpu.Probe(ctx); err == nil && len(inv.Devices) > 0 {
			o.Device = memory.CUDA
		}
	} else if o.Device, err = memory.ParseDevice(f.device); err != nil {
		return model.Config{}, memory.Options{}, fmt.Errorf("--device: %w", err)
	}
	if f.seqLen > cfg.MaxPositions {
		return model.Config{}, memory.Options{}, fmt.Errorf("--seq-len %d exceeds the model's max_position_embeddings %d", f.seqLen, cfg.MaxPositions)
	}
	if err := o.Validate(); err != nil {
		return model.Config{}, memory.Options{}, err
	}
	return cfg, o, nil
}

// describe is the one-line summary of what is estimated.
func (f *memFlags) describe(o memory.Options) string {
	s := fmt.Sprintf("%s, %s", f.modelName, o.Method)
	if o.Method != memory.Full {
		s += fmt.Sprintf(" r%d (%d target modules)", o.LoRA.Rank, len(o.LoRA.Targets))
	}
	s += fmt.Sprintf(", micro-batch %d × %d tokens, %s, base %s, activations %s", o.MicroBatch, o.SeqLen, o.Device, o.BaseDTypeResolved(), o.ActDTypeResolved())
	if o.Recompute {
		s += ", recompute"
	}
	return s
}

func newEstimateCmd(g *globalOptions) *cobra.Command {
	var f memFlags
	var budgetFlag string
	var batch int
	cmd := &cobra.Command{
		Use:   "estimate",
		Short: "Estimate the peak memory of a training run, term by term",
		Long: `Estimates the peak memory of training a model (preset or config.json) with
LoRA, QLoRA or full fine-tuning: base weights, trainable parameters, their
gradients and AdamW states, the activations peertune's kernels keep, the
logits, workspaces, the tensor held while loading, and a fixed runtime or
CUDA context overhead. Each term is named. On the CPU the figures are RSS; on
a GPU, device memory as NVML reports it.

With --mem-budget it also prints the micro-batch the planner would pick for
a rank whose share of the global batch is --batch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			cfg, o, err := f.resolve(ctx)
			if err != nil {
				return err
			}
			b, err := memory.Estimate(cfg, o)
			if err != nil {
				return err
			}
			var plan *memory.Choice
			var planErr error
			var budget uint64
			if budgetFlag != "" {
				if budget, err = resolveBudgetFlag(ctx, budgetFlag, o.Device); err != nil {
					return err
				}
				ch, err := memory.Plan(cfg, o, int64(budget), batch)
				var be *memory.BudgetError
				switch {
				case err == nil:
					plan = &ch
				case errors.As(err, &be):
					planErr = err
				default:
					return err
				}
			}
			return printEstimate(cmd.OutOrStdout(), &f, o, b, budget, plan, planErr)
		},
	}
	f.register(cmd, "lora")
	cmd.Flags().StringVar(&budgetFlag, "mem-budget", "", "also plan for this budget: 90% of this machine's device, or a size (20GiB)")
	cmd.Flags().IntVar(&batch, "batch", 16, "with --mem-budget: this rank's share of the global batch, in sequences")
	return cmd
}

// resolveBudgetFlag turns --mem-budget into bytes; a percentage is of this
// machine's GPU 0 (cuda) or host memory limit (cpu).
func resolveBudgetFlag(ctx context.Context, s string, dev memory.Device) (uint64, error) {
	b, err := gpu.ParseBudget(s)
	if err != nil {
		return 0, fmt.Errorf("--mem-budget: %w", err)
	}
	if b.Percent == 0 {
		return b.Bytes, nil
	}
	idx := -1
	if dev == memory.CUDA {
		idx = 0
	}
	r, err := gpu.Detect(ctx, nil, idx, b)
	if err != nil {
		return 0, fmt.Errorf("--mem-budget %s: %w", s, err)
	}
	return r.Budget, nil
}

func printEstimate(w io.Writer, f *memFlags, o memory.Options, b memory.Breakdown, budget uint64, plan *memory.Choice, planErr error) error {
	if f.asJSON {
		raw, err := json.Marshal(b)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		m["model"], m["method"], m["device"] = f.modelName, o.Method.String(), o.Device.String()
		m["micro_batch"], m["seq_len"], m["recompute"], m["base_dtype"] = o.MicroBatch, o.SeqLen, o.Recompute, o.BaseDTypeResolved().String()
		m["act_dtype"] = o.ActDTypeResolved().String()
		if o.Method != memory.Full {
			m["lora_rank"] = o.LoRA.Rank
		}
		if budget > 0 {
			p := map[string]any{"budget_bytes": budget}
			if plan != nil {
				p["micro_batch"], p["recompute"], p["total_bytes"] = plan.MicroBatch, plan.Recompute, plan.Estimate.Total
			} else {
				p["error"] = planErr.Error()
			}
			m["plan"] = p
		}
		out, err := json.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(out))
		return err
	}
	fmt.Fprintln(w, f.describe(o))
	fmt.Fprintf(w, "%s base parameters, %s trainable\n\n", commaInt(b.BaseParams), commaInt(b.TrainableParams))
	fmt.Fprint(w, memory.Table(b))
	if budget > 0 {
		fmt.Fprintln(w)
		if plan != nil {
			rc := "without recompute"
			if plan.Recompute {
				rc = "with recompute"
			}
			fmt.Fprintf(w, "budget %s: micro-batch %d %s (%s)\n", memory.FormatBytes(int64(budget)), plan.MicroBatch, rc, memory.FormatBytes(plan.Estimate.Total))
		} else {
			fmt.Fprintf(w, "budget %s: %v\n", memory.FormatBytes(int64(budget)), planErr)
		}
	}
	return nil
}

// commaInt formats n as 1,234,567.
func commaInt(n int64) string {
	s := fmt.Sprint(n)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
