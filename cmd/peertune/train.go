package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/node"
	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/model"
)

func newTrainCmd(g *globalOptions) *cobra.Command {
	cfg := trainer.DefaultConfig()
	var configFile string
	var co clusterOptions
	var memBudget string
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Fine-tune a model (LoRA or full) on instruction data",
		Long: `Fine-tunes a Llama-family model. With no flags it applies LoRA to the built-in
tiny model on the built-in telecom calculation data, evaluates held-out exact
match and format accuracy before and after, and writes to ./out:

  adapter_config.json, adapter_model.safetensors   PEFT format (--method lora)
  config.json, model.safetensors                   Hugging Face format (--method full)
  metrics.jsonl                                    one JSON object per step / evaluation
  summary.json                                     final figures

Every flag can also be set in a YAML file given with --config (keys are the
flag names with underscores: lora_rank, micro_batch, ...); flags given on the
command line override the file.`,
		Example: `  peertune train
  peertune train --data my.jsonl --model ./llama-dir --lora-rank 8 --steps 500
  peertune train --method full --model peertune-tiny --init random --data builtin:corpus`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				fileCfg := trainer.DefaultConfig()
				if err := fileCfg.LoadYAML(configFile); err != nil {
					return err
				}
				// Flags set on the command line win over the file.
				flagCfg := cfg
				cfg = fileCfg
				cmd.Flags().Visit(func(f *pflag.Flag) { applyFlag(&cfg, &flagCfg, f.Name) })
			}
			if co.nodes > 1 {
				args := os.Args[1:]
				if !cmd.Flags().Changed("mem-budget") {
					// The local peers share this host's memory.
					args = append(args, "--mem-budget", fmt.Sprintf("%d%%", 90/co.nodes))
				}
				return runLocalCluster(cmd.Context(), co.nodes, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			if co.nodes < 1 {
				return fmt.Errorf("--nodes %d: must be at least 1", co.nodes)
			}
			return runTrain(cmd, g, cfg, co, memBudget)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML job file (unknown keys are an error)")
	f.StringVar(&cfg.Model, "model", cfg.Model, `"builtin", a preset ("`+strings.Join(model.PresetNames(), `", "`)+`"), or a directory with config.json + model.safetensors`)
	f.StringVar(&cfg.Init, "init", cfg.Init, "pretrained (load the weights) or random (train from scratch)")
	f.StringVar(&cfg.Data, "data", cfg.Data, `"builtin" (telecom tasks), "builtin:corpus" (pretraining text), or a JSONL file`)
	f.StringVar(&cfg.Format, "format", cfg.Format, "JSONL format: auto, instruction, alpaca or chat")
	f.StringVar(&cfg.Method, "method", cfg.Method, "lora or full")
	f.IntVar(&cfg.LoRARank, "lora-rank", cfg.LoRARank, "LoRA rank r")
	f.Float64Var(&cfg.LoRAAlpha, "lora-alpha", cfg.LoRAAlpha, "LoRA alpha (the adapter is scaled by alpha/r)")
	f.Float64Var(&cfg.LoRADropout, "lora-dropout", cfg.LoRADropout, "dropout on the adapters' input")
	f.StringVar(&cfg.LoRATargets, "lora-targets", cfg.LoRATargets, "comma-separated modules ("+strings.Join(model.ProjNames(), ",")+") or all")
	f.IntVar(&cfg.Steps, "steps", cfg.Steps, "optimizer steps (0: derive from --epochs)")
	f.Float64Var(&cfg.Epochs, "epochs", cfg.Epochs, "passes over the training split (when --steps is 0)")
	f.IntVar(&cfg.Batch, "batch", cfg.Batch, "global batch size in sequences per optimizer step")
	f.IntVar(&cfg.MicroBatch, "micro-batch", cfg.MicroBatch, "sequences per forward/backward (gradients accumulate up to --batch)")
	f.IntVar(&cfg.SeqLen, "seq-len", cfg.SeqLen, "maximum tokens per sequence")
	f.Float64Var(&cfg.LR, "lr", cfg.LR, "peak learning rate")
	f.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "linear warmup steps before the cosine decay")
	f.Float64Var(&cfg.WeightDecay, "weight-decay", cfg.WeightDecay, "AdamW decoupled weight decay (not applied to norms and biases)")
	f.Float64Var(&cfg.GradClip, "grad-clip", cfg.GradClip, "clip the global gradient norm to this (0: off)")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed for data order, splits, adapter init and dropout")
	f.BoolVar(&cfg.Recompute, "recompute", cfg.Recompute, "recompute activations in the backward pass (less memory, ~1/3 more compute)")
	f.StringVar(&cfg.Precision, "precision", cfg.Precision, "compute precision: auto (bf16 on a GPU with bf16 tensor cores, sm_80+; else f32), f32, or bf16 (GPU: bf16 activations and GEMM weights, f32 master weights, gradients and optimizer state)")
	f.IntVar(&cfg.EvalEvery, "eval-every", cfg.EvalEvery, "validation loss every N steps (0: never)")
	f.IntVar(&cfg.Patience, "patience", cfg.Patience, "stop after N evaluations without improvement (0: never)")
	f.IntVar(&cfg.EvalExamples, "eval-examples", cfg.EvalExamples, "held-out examples scored by generation before and after")
	f.Float64Var(&cfg.ValFraction, "val-fraction", cfg.ValFraction, "share of examples held out for validation loss")
	f.Float64Var(&cfg.TestFraction, "test-fraction", cfg.TestFraction, "share of examples held out for the before/after test")
	f.BoolVar(&cfg.TrainOnPrompt, "train-on-prompt", cfg.TrainOnPrompt, "also compute the loss on prompt tokens")
	f.BoolVar(&cfg.Truncate, "truncate", cfg.Truncate, "truncate examples longer than --seq-len (counted) instead of refusing them")
	f.BoolVar(&cfg.AllowOverlap, "allow-overlap", cfg.AllowOverlap, "train even if evaluation examples duplicate training examples")
	f.BoolVar(&cfg.SkipInvalid, "skip-invalid", cfg.SkipInvalid, "skip malformed JSONL lines (counted in summary.json) instead of failing")
	f.IntVar(&cfg.CheckpointEvery, "checkpoint-every", cfg.CheckpointEvery, "write a checkpoint every N steps to --out/checkpoints (0: only when stopped by SIGTERM/Ctrl-C)")
	f.IntVar(&cfg.Keep, "keep", cfg.Keep, "checkpoints to keep (0: all)")
	f.BoolVar(&cfg.Resume, "resume", cfg.Resume, "continue from the newest valid checkpoint in --out/checkpoints")
	f.IntVar(&cfg.CheckEvery, "check-every", cfg.CheckEvery, "compare a checksum of the trainable state across ranks every N steps (0: never)")
	f.StringVar(&cfg.Out, "out", cfg.Out, "output directory (written by rank 0)")

	f.StringVar(&memBudget, "mem-budget", "90%", "memory this node may use: a share (90%) or a size (20GiB) of the GPU's memory, or on the CPU of the cgroup limit or physical memory; the micro-batch is planned to fit and backs off if a step goes over (off: no planning)")
	f.StringVar(&co.device, "device", "auto", "compute device: auto (CUDA when a GPU and its libraries are there), cpu or cuda")
	f.StringVar(&co.collective, "collective", "auto", "gradient all-reduce across nodes: auto (NCCL on GPUs when libnccl.so.2 is found, else the TCP ring), ring or nccl")
	f.IntVar(&co.nodes, "nodes", 1, "start N local peer processes on loopback that train together (like torchrun --nproc-per-node)")
	f.StringVar(&co.join, "join", "", "host:port[,host:port] of peers to join (gossip addresses); multi-node jobs")
	f.StringVar(&co.bind, "bind", "", "ip:port this node's gossip listens on (joins a cluster when set)")
	f.StringVar(&co.advertise, "advertise", "", "ip:port peers should dial for gossip (required when --bind is 0.0.0.0)")
	f.StringVar(&co.collectiveBind, "collective-bind", "", "ip:port of the all-reduce ring listener (default: the --bind ip, any port)")
	f.StringVar(&co.secretFile, "secret-file", "", "file with the job secret that encrypts gossip and authenticates the ring (or set "+node.SecretEnv+")")
	f.IntVar(&co.minNodes, "min-nodes", 1, "the fewest nodes a world may have")
	f.IntVar(&co.worldSize, "world-size", 0, "wait for this many nodes (0: start with those ready), up to --rendezvous-timeout; the first world then needs a strict majority of them")
	f.DurationVar(&co.rendezvousTimeout, "rendezvous-timeout", 5*time.Minute, "how long to wait for --world-size nodes before starting with what is there (at least --min-nodes and a strict majority of --world-size)")
	f.StringVar(&co.nodeName, "node-name", "", "unique node id (default: hostname-pid-random)")
	f.BoolVar(&co.allowMinority, "allow-minority", false, "let a world form without a strict majority of the last one (or, for the first world, of --world-size); risks split brain under a partition: the operator's call")
	f.StringVar(&co.ledger, "ledger", "", "directory where each node records the samples it computed per step (for audits and tests)")
	return cmd
}

// applyFlag copies the field behind flag name from src to dst.
func applyFlag(dst, src *trainer.Config, name string) {
	switch name {
	case "model":
		dst.Model = src.Model
	case "init":
		dst.Init = src.Init
	case "data":
		dst.Data = src.Data
	case "format":
		dst.Format = src.Format
	case "method":
		dst.Method = src.Method
	case "lora-rank":
		dst.LoRARank = src.LoRARank
	case "lora-alpha":
		dst.LoRAAlpha = src.LoRAAlpha
	case "lora-dropout":
		dst.LoRADropout = src.LoRADropout
	case "lora-targets":
		dst.LoRATargets = src.LoRATargets
	case "steps":
		dst.Steps = src.Steps
	case "epochs":
		dst.Epochs = src.Epochs
	case "batch":
		dst.Batch = src.Batch
	case "micro-batch":
		dst.MicroBatch = src.MicroBatch
	case "seq-len":
		dst.SeqLen = src.SeqLen
	case "lr":
		dst.LR = src.LR
	case "warmup":
		dst.Warmup = src.Warmup
	case "weight-decay":
		dst.WeightDecay = src.WeightDecay
	case "grad-clip":
		dst.GradClip = src.GradClip
	case "seed":
		dst.Seed = src.Seed
	case "recompute":
		dst.Recompute = src.Recompute
	case "precision":
		dst.Precision = src.Precision
	case "eval-every":
		dst.EvalEvery = src.EvalEvery
	case "patience":
		dst.Patience = src.Patience
	case "eval-examples":
		dst.EvalExamples = src.EvalExamples
	case "val-fraction":
		dst.ValFraction = src.ValFraction
	case "test-fraction":
		dst.TestFraction = src.TestFraction
	case "train-on-prompt":
		dst.TrainOnPrompt = src.TrainOnPrompt
	case "truncate":
		dst.Truncate = src.Truncate
	case "allow-overlap":
		dst.AllowOverlap = src.AllowOverlap
	case "skip-invalid":
		dst.SkipInvalid = src.SkipInvalid
	case "checkpoint-every":
		dst.CheckpointEvery = src.CheckpointEvery
	case "keep":
		dst.Keep = src.Keep
	case "resume":
		dst.Resume = src.Resume
	case "check-every":
		dst.CheckEvery = src.CheckEvery
	case "out":
		dst.Out = src.Out
	}
}

func runTrain(cmd *cobra.Command, g *globalOptions, cfg trainer.Config, co clusterOptions, memBudget string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	be, err := newBackend(g, co.device)
	if err != nil {
		return err
	}
	log := g.log
	log.Info("backend", zap.String("backend", be.Name()))
	progress := newProgress(os.Stderr, log)
	jio := trainer.JobIO{Stdout: cmd.OutOrStdout(), OnStep: progress.step}
	device, budget, err := nodeResources(cmd.Context(), log, memBudget, be, &jio)
	if err != nil {
		return err
	}
	if co.distributed() {
		defer progress.done()
		return runDistributed(cmd.Context(), g, co, cfg, be, jio, device, budget, func(rank int) bool { return rank == 0 })
	}
	sum, err := trainer.RunJob(cmd.Context(), cfg, be, &collective.Single{}, log, jio)
	progress.done()
	if err != nil {
		return err
	}
	log.Info("done", zap.String("out", cfg.Out), zap.Int("steps", sum.Steps), zap.Float64("seconds", sum.Seconds))
	return nil
}

// progress shows a one-line bar on a terminal and periodic log lines otherwise.
type progress struct {
	tty      bool
	out      *os.File
	log      *zap.Logger
	lastLog  time.Time
	drawn    bool
	interval time.Duration
}

func newProgress(out *os.File, log *zap.Logger) *progress {
	return &progress{tty: term.IsTerminal(int(out.Fd())), out: out, log: log, interval: 5 * time.Second}
}

func (p *progress) step(st trainer.StepStats) {
	if p.tty {
		const width = 24
		filled := width * st.Step / max(st.Total, 1)
		bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
		fmt.Fprintf(p.out, "\r[%s] %d/%d loss %.4f lr %.2e %.0f tok/s ETA %s   ",
			bar, st.Step, st.Total, st.Loss, st.LR, st.TokensPerSec, st.ETA.Round(time.Second))
		p.drawn = true
		return
	}
	if time.Since(p.lastLog) >= p.interval || st.Step == st.Total || st.Step == 1 {
		p.lastLog = time.Now()
		p.log.Info("step", zap.Int("step", st.Step), zap.Int("total", st.Total), zap.Float64("loss", st.Loss),
			zap.Float64("lr", st.LR), zap.Float64("grad_norm", st.GradNorm), zap.Float64("tokens_per_s", st.TokensPerSec),
			zap.Duration("eta", st.ETA.Round(time.Second)))
	}
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.out)
	}
}
