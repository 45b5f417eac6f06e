package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/spf13/cobra"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/kernels/cuda"
	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/model"
)

func newBenchCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure GEMM and training-step speed",
		Long: `Benchmarks print figures measured side by side in one run, so that ratios
stay meaningful on a shared, noisy machine. Nothing here is asserted by tests.`,
	}
	cmd.AddCommand(newBenchGemmCmd(g), newBenchStepCmd(g), newBenchAllReduceCmd(g), newBenchWorkerCmd(g), newTCPSinkCmd())
	return cmd
}

// gemmGFLOPS times a square GEMM on whichever backend be is; dtype bf16 is
// for GPUs (bf16 inputs, f32 accumulation).
func gemmGFLOPS(be kernels.Backend, size, iters int, dtype string) (float64, string, error) {
	switch b := be.(type) {
	case *cpu.Backend:
		if dtype != "f32" {
			return 0, "", fmt.Errorf("--dtype %s: the CPU backend computes in f32", dtype)
		}
		gf, err := cpu.GemmGFLOPS(b, size, size, size, iters)
		return gf, b.BLAS(), err
	case *cuda.Backend:
		dt := kernels.F32
		if dtype == "bf16" {
			dt = kernels.BF16
		} else if dtype != "f32" {
			return 0, "", fmt.Errorf("--dtype %q: want f32 or bf16", dtype)
		}
		tf, err := cuda.GemmTFLOPS(b, size, size, size, dt, iters)
		lib := "cublas"
		if dt == kernels.F32 && b.TF32() {
			lib = "cublas-tf32"
		}
		return tf * 1000, lib, err
	}
	return 0, "", fmt.Errorf("backend %s has no GEMM benchmark", be.Name())
}

func newBenchGemmCmd(g *globalOptions) *cobra.Command {
	var size, iters int
	var asJSON bool
	var device, dtype string
	cmd := &cobra.Command{
		Use:   "gemm",
		Short: "Time a square float32 GEMM through the backend's BLAS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if size <= 0 || iters <= 0 {
				return fmt.Errorf("--size and --iters must be positive (got %d, %d)", size, iters)
			}
			be, err := newBackend(g, device)
			if err != nil {
				return err
			}
			gf, blas, err := gemmGFLOPS(be, size, iters, dtype)
			if err != nil {
				return err
			}
			res := map[string]any{"backend": be.Name(), "blas": blas, "dtype": dtype, "m": size, "n": size, "k": size, "gflops": round(gf, 2)}
			return printResult(cmd.OutOrStdout(), asJSON, res,
				fmt.Sprintf("%s: sgemm %d^3: %.1f GFLOP/s", be.Name(), size, gf))
		},
	}
	cmd.Flags().IntVar(&size, "size", 1024, "matrix size (m = n = k)")
	cmd.Flags().IntVar(&iters, "iters", 10, "timed repetitions (after one warm-up)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON line")
	cmd.Flags().StringVar(&device, "device", "cpu", "auto, cpu or cuda")
	cmd.Flags().StringVar(&dtype, "dtype", "f32", "f32, or bf16 on a GPU")
	return cmd
}

func newBenchStepCmd(g *globalOptions) *cobra.Command {
	var (
		modelName, method, targets string
		seqLen, microBatch, steps  int
		rank                       int
		recompute, asJSON          bool
		device, precision          string
	)
	cmd := &cobra.Command{
		Use:   "step",
		Short: "Time full training steps (forward, backward, AdamW) on random weights",
		Long: `Times one optimizer step of micro-batch × seq-len tokens on a preset or
config.json with random weights, and compares the achieved FLOP rate with a
1024^3 GEMM measured in the same run (mfu_vs_gemm). LoRA steps need fewer FLOPs
than full steps: frozen base weights get no weight gradient.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := model.LoadConfig(modelName)
			if err != nil {
				return err
			}
			meth, err := model.ParseMethod(method)
			if err != nil {
				return fmt.Errorf("--method: %w", err)
			}
			if seqLen <= 0 || microBatch <= 0 || steps <= 0 {
				return fmt.Errorf("--seq-len, --micro-batch and --steps must be positive")
			}
			if seqLen > cfg.MaxPositions {
				return fmt.Errorf("--seq-len %d exceeds the model's max positions %d", seqLen, cfg.MaxPositions)
			}
			opts := model.Options{Method: meth, Recompute: recompute}
			if meth == model.MethodLoRA {
				tg, err := model.ParseTargets(targets)
				if err != nil {
					return fmt.Errorf("--lora-targets: %w", err)
				}
				opts.LoRA = model.LoRAConfig{Rank: rank, Alpha: 2 * float64(rank), Targets: tg}
			}
			be, err := newBackend(g, device)
			if err != nil {
				return err
			}
			var dev trainer.Device
			if gb, ok := be.(*cuda.Backend); ok {
				dev = trainer.Device{CUDA: true, BF16: gb.HasBF16()}
			}
			pc := trainer.Config{Precision: precision}
			if opts.Precision, err = pc.ResolvePrecision(dev); err != nil {
				return err
			}
			res, err := benchStep(be, cfg, opts, seqLen, microBatch, steps)
			if err != nil {
				return err
			}
			res["model"] = modelName
			return printResult(cmd.OutOrStdout(), asJSON, res, fmt.Sprintf(
				"%s %s %s seq %d × mb %d: %.0f tokens/s, %.1f GFLOP/s achieved vs %.1f GEMM (%.2f)",
				modelName, method, opts.Precision, seqLen, microBatch, res["tokens_per_s"], res["achieved_gflops"], res["gemm_gflops"], res["mfu_vs_gemm"]))
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelName, "model", "smollm2-135m", "preset ("+fmt.Sprint(model.PresetNames())+") or config.json")
	f.StringVar(&method, "method", "lora", "lora or full")
	f.StringVar(&targets, "lora-targets", "all", "LoRA target modules")
	f.IntVar(&rank, "lora-rank", 16, "LoRA rank")
	f.IntVar(&seqLen, "seq-len", 256, "tokens per sequence")
	f.IntVar(&microBatch, "micro-batch", 1, "sequences per step")
	f.IntVar(&steps, "steps", 3, "timed steps (after one warm-up step)")
	f.BoolVar(&recompute, "recompute", false, "recompute activations in the backward pass")
	f.BoolVar(&asJSON, "json", false, "print one JSON line")
	f.StringVar(&device, "device", "cpu", "auto, cpu or cuda")
	f.StringVar(&precision, "precision", "auto", "auto (bf16 on a GPU with bf16 tensor cores, sm_80+; else f32), f32 or bf16")
	return cmd
}

// benchStep times whole optimizer steps and, in the same run, a 1024^3 GEMM.
func benchStep(be kernels.Backend, cfg model.Config, opts model.Options, seq, rows, steps int) (map[string]any, error) {
	m, err := model.New(be, cfg, opts)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	if err := m.InitBase(1); err != nil {
		return nil, err
	}
	if opts.Method == model.MethodLoRA {
		if err := m.InitLoRA(2); err != nil {
			return nil, err
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	b := &model.Batch{Rows: rows, Seq: seq}
	for i := 0; i < rows*seq; i++ {
		b.Tokens = append(b.Tokens, int32(rng.IntN(cfg.Vocab)))
		b.Targets = append(b.Targets, int32(rng.IntN(cfg.Vocab)))
		b.Positions = append(b.Positions, int32(i%seq))
	}
	step := func(s int) error {
		if err := m.ZeroGrads(); err != nil {
			return err
		}
		if _, _, err := m.ForwardBackward(b, 1/float32(rows*seq), uint64(s)); err != nil {
			return err
		}
		if _, err := m.GradSumSquares(); err != nil {
			return err
		}
		if err := m.Update(kernels.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: s, GradScale: 1}); err != nil {
			return err
		}
		return be.Sync()
	}
	if err := step(1); err != nil { // warm-up: allocations, RoPE tables, BLAS threads
		return nil, err
	}
	// The GEMM rate is measured right before and right after the steps and
	// averaged, so that the ratio compares like with like on a noisy machine.
	// The reference GEMM is in the step's precision; on a GPU a 1024^3
	// GEMM is too small to fill the device, so it is 8192^3 there.
	gemmSize, gemmDT := 1024, "f32"
	if _, onGPU := be.(*cuda.Backend); onGPU {
		gemmSize = 8192
	}
	if opts.Precision == kernels.BF16 {
		gemmDT = "bf16"
	}
	gemmBefore, _, err := gemmGFLOPS(be, gemmSize, 5, gemmDT)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for s := 0; s < steps; s++ {
		if err := step(s + 2); err != nil {
			return nil, err
		}
	}
	elapsed := time.Since(start).Seconds() / float64(steps)
	gemmAfter, _, err := gemmGFLOPS(be, gemmSize, 5, gemmDT)
	if err != nil {
		return nil, err
	}
	gemm := (gemmBefore + gemmAfter) / 2
	fl := cfg.FLOPsPerToken(opts.Method, opts.LoRA, seq)
	tps := float64(rows*seq) / elapsed
	achieved := fl.Total * tps / 1e9
	return map[string]any{
		"backend": be.Name(), "method": opts.Method.String(), "precision": opts.Precision.String(), "seq_len": seq, "micro_batch": rows,
		"gemm_size":        gemmSize,
		"trainable_params": m.TrainableParams(), "all_params": m.AllParams(),
		"step_seconds": round(elapsed, 4), "tokens_per_s": round(tps, 1),
		"model_flops_per_token": fl.Total, "forward_flops_per_token": fl.Forward, "backward_flops_per_token": fl.Backward,
		"achieved_gflops": round(achieved, 2), "gemm_gflops": round(gemm, 2), "mfu_vs_gemm": round(achieved/gemm, 3),
	}, nil
}

func printResult(w io.Writer, asJSON bool, res map[string]any, human string) error {
	if !asJSON {
		_, err := fmt.Fprintln(w, human)
		return err
	}
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

func round(v float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}
