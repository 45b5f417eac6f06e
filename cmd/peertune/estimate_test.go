package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func runMemCmd(t *testing.T, cmd *cobra.Command, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

func TestParamsLlama3PEFTLine(t *testing.T) {
	out := runMemCmd(t, newParamsCmd(&globalOptions{}), "--model", "llama3-8b", "--lora-rank", "16",
		"--lora-targets", "q_proj,k_proj,v_proj,o_proj", "--device", "cuda")
	want := "trainable params: 13,631,488 || all params: 8,043,892,736 || trainable%: 0.1695"
	if first := strings.SplitN(out, "\n", 2)[0]; first != want {
		t.Errorf("first line %q, want %q", first, want)
	}
	for _, r := range []string{"   1 ", " 256 ", "  16*"} {
		if !strings.Contains(out, r) {
			t.Errorf("table lacks rank row %q:\n%s", r, out)
		}
	}
}

func TestParamsJSON(t *testing.T) {
	out := runMemCmd(t, newParamsCmd(&globalOptions{}), "--model", "smollm2-135m", "--lora-rank", "12", "--device", "cpu", "--json")
	var got struct {
		Ranks []struct {
			Rank       int   `json:"rank"`
			AdapterF32 int64 `json:"adapter_bytes_f32"`
			AdapterBF  int64 `json:"adapter_bytes_bf16"`
			Memory     int64 `json:"memory_bytes"`
		} `json:"ranks"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got.Ranks) != 10 || got.Ranks[4].Rank != 12 {
		t.Fatalf("ranks %+v: want 1..256 plus 12", got.Ranks)
	}
	for i := 1; i < len(got.Ranks); i++ {
		r, p := got.Ranks[i], got.Ranks[i-1]
		if r.AdapterF32 <= p.AdapterF32 || r.Memory <= p.Memory || r.AdapterBF >= r.AdapterF32 {
			t.Errorf("rank %d: sizes do not grow with the rank or BF16 is not smaller: %+v", r.Rank, r)
		}
	}
}

func TestEstimateCommand(t *testing.T) {
	out := runMemCmd(t, newEstimateCmd(&globalOptions{}), "--model", "llama3-8b", "--method", "qlora", "--device", "cuda",
		"--micro-batch", "2", "--seq-len", "1024", "--json")
	var got struct {
		Total int64            `json:"total_bytes"`
		Terms map[string]int64 `json:"terms"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("want one JSON line: %v\n%s", err, out)
	}
	var sum int64
	for _, v := range got.Terms {
		sum += v
	}
	if got.Total <= 0 || got.Terms["logits"] != 2*1024*128256*4 || got.Terms["nf4_quant_constants"] == 0 || sum < got.Total {
		t.Errorf("json %s", out)
	}
	txt := runMemCmd(t, newEstimateCmd(&globalOptions{}), "--model", "smollm2-135m", "--method", "full", "--device", "cpu",
		"--recompute", "--mem-budget", "6GiB", "--batch", "8")
	for _, want := range []string{"base_weights", "adamw_states", "logits", "total", "budget 6.00 GiB: micro-batch"} {
		if !strings.Contains(txt, want) {
			t.Errorf("estimate output lacks %q:\n%s", want, txt)
		}
	}
	cmd := newEstimateCmd(&globalOptions{})
	cmd.SetArgs([]string{"--model", "llama3-8b", "--method", "full", "--base-dtype", "nf4", "--device", "cuda"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil {
		t.Error("full with an nf4 base: want an error")
	}
}
