package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/memory"
)

// paramsRanks are the ranks the explorer tabulates (plus --lora-rank).
var paramsRanks = []int{1, 2, 4, 8, 16, 32, 64, 128, 256}

type paramsRow struct {
	Rank            int     `json:"rank"`
	TrainableParams int64   `json:"trainable_params"`
	TrainablePct    float64 `json:"trainable_pct"`
	AdapterF32      int64   `json:"adapter_bytes_f32"`
	AdapterBF16     int64   `json:"adapter_bytes_bf16"`
	MemoryBytes     int64   `json:"memory_bytes"`
}

func newParamsCmd(g *globalOptions) *cobra.Command {
	var f memFlags
	cmd := &cobra.Command{
		Use:   "params",
		Short: "Count LoRA parameters (PEFT's line) and tabulate ranks 1..256",
		Long: `Prints the line PEFT's print_trainable_parameters() prints for the model and
adapter, then a table across ranks 1..256: trainable parameters, the size of
adapter_model.safetensors (F32, as peertune writes it; BF16 for comparison),
and the estimated peak memory of training at --micro-batch × --seq-len (see
'peertune estimate' for its terms).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			cfg, o, err := f.resolve(ctx)
			if err != nil {
				return err
			}
			if o.Method == memory.Full {
				return fmt.Errorf("--method full trains every parameter; params explores LoRA ranks (use lora or qlora)")
			}
			k := memory.Count(cfg, o.LoRA)
			line := trainer.ParamLine(int(k.LoRA), int(k.Base+k.LoRA))
			ranks := append([]int(nil), paramsRanks...)
			if !containsInt(ranks, o.LoRA.Rank) {
				ranks = append(ranks, o.LoRA.Rank)
				sortInts(ranks)
			}
			var rows []paramsRow
			for _, r := range ranks {
				ro := o
				ro.LoRA.Rank = r
				kr := memory.Count(cfg, ro.LoRA)
				b, err := memory.Estimate(cfg, ro)
				if err != nil {
					return err
				}
				rows = append(rows, paramsRow{Rank: r, TrainableParams: kr.LoRA, TrainablePct: 100 * float64(kr.LoRA) / float64(kr.Base+kr.LoRA),
					AdapterF32: memory.AdapterFileBytes(cfg, ro.LoRA, 4), AdapterBF16: memory.AdapterFileBytes(cfg, ro.LoRA, 2), MemoryBytes: b.Total})
			}
			w := cmd.OutOrStdout()
			if f.asJSON {
				out, err := json.Marshal(map[string]any{"model": f.modelName, "peft_line": line, "trainable_params": k.LoRA,
					"all_params": k.Base + k.LoRA, "method": o.Method.String(), "device": o.Device.String(),
					"micro_batch": o.MicroBatch, "seq_len": o.SeqLen, "ranks": rows})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(w, string(out))
				return err
			}
			fmt.Fprintln(w, line)
			fmt.Fprintln(w)
			fmt.Fprintf(w, "%5s %16s %11s %13s %13s %13s\n", "rank", "trainable", "trainable%", "adapter F32", "adapter BF16", "est. memory")
			for _, r := range rows {
				mark := " "
				if r.Rank == o.LoRA.Rank {
					mark = "*"
				}
				fmt.Fprintf(w, "%4d%s %16s %11.4f %13s %13s %13s\n", r.Rank, mark, commaInt(r.TrainableParams), r.TrainablePct,
					memory.FormatBytes(r.AdapterF32), memory.FormatBytes(r.AdapterBF16), memory.FormatBytes(r.MemoryBytes))
			}
			fmt.Fprintf(w, "\nest. memory: %s\n", f.describe(o))
			return nil
		},
	}
	f.register(cmd, "lora")
	return cmd
}

func containsInt(xs []int, v int) bool {
	for _, x := range xs {
		if x == v {
			return true
		}
	}
	return false
}

func sortInts(xs []int) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
}
