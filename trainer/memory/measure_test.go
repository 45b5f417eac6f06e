package memory

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/trainer/model"
)

// procStatusKB reads VmRSS and VmHWM from /proc/self/status, in bytes.
func procStatusKB(t testing.TB) (rss, hwm int64) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	return rss, hwm
}

// releaseMemory is node/gpu.ReleaseMemory: what RunJob does after loading.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

type measureCase struct {
	name      string
	cfg       model.Config
	method    Method
	rank      int
	dropout   float64
	mb, seq   int
	recompute bool
	// fromFile loads the base weights with model.LoadBase from a
	// safetensors file (pretrained path) instead of model.InitBase.
	fromFile bool
}

func measureCfg(hidden, inter, layers, heads, kv, vocab int) model.Config {
	return model.Config{Hidden: hidden, Intermediate: inter, Layers: layers, Heads: heads, KVHeads: kv, Vocab: vocab,
		RopeTheta: 10000, RMSEps: 1e-5, MaxPositions: 4096, Arch: "llama"}
}

func randBatch(c model.Config, rows, seq int) *model.Batch {
	rng := rand.New(rand.NewPCG(7, 7))
	b := &model.Batch{Rows: rows, Seq: seq}
	for r := 0; r < rows; r++ {
		for i := 0; i < seq; i++ {
			b.Tokens = append(b.Tokens, int32(rng.IntN(c.Vocab)))
			tgt := int32(rng.IntN(c.Vocab))
			if i == seq-1 {
				tgt = kernels.IgnoreIndex
			}
			b.Targets = append(b.Targets, tgt)
			b.Positions = append(b.Positions, int32(i))
		}
	}
	return b
}

// measurePeak trains one step of c on a fresh CPU backend and returns the
// peak RSS increase over a baseline taken right before model.New.
func measurePeak(t *testing.T, c measureCase, limit int64) int64 {
	t.Helper()
	be, err := cpu.New(cpu.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: OpenBLAS touches a buffer of up to BUFFER_SIZE (32 MiB) per
	// OS thread that calls it, as the GEMM shapes need; that is process
	// baseline (the runtime term), not the model's. A vocabulary-wide
	// lm_head GEMM with hidden >= 384 packs full panels, and the attention
	// runs single-threaded GEMMs from every worker goroutine.
	{
		wc := measureCfg(384, 256, 1, 6, 6, 32000)
		wc.TiedEmbed = true
		m, err := model.New(be, wc, model.Options{Method: model.MethodFull})
		if err != nil {
			t.Fatal(err)
		}
		wb := randBatch(wc, 2, 128)
		for i := 0; i < 2; i++ {
			if _, _, err := m.ForwardBackward(wb, 1e-3, 1); err != nil {
				t.Fatal(err)
			}
		}
		m.Free()
	}
	batch := randBatch(c.cfg, c.mb, c.seq)
	opts := model.Options{Method: model.MethodFull, Recompute: c.recompute}
	if c.method != Full {
		opts.Method = model.MethodLoRA
		opts.LoRA = model.LoRAConfig{Rank: c.rank, Alpha: 2 * float64(c.rank), Dropout: c.dropout, Targets: model.DefaultLoRATargets()}
	}
	var weights string
	if c.fromFile {
		m, err := model.New(be, c.cfg, model.Options{Method: model.MethodFull})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.InitBase(1); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := m.SaveBase(dir); err != nil {
			t.Fatal(err)
		}
		m.Free()
		weights = filepath.Join(dir, "model.safetensors")
	}
	releaseMemory()
	// What RunJob does on a CPU node: cap the Go heap at the budget, here
	// the Go memory in use now plus the estimate, so that garbage (the
	// per-tensor copies LoadBase reads) is collected instead of piling up
	// to GOGC's 2× live heap. The limit is soft: live memory above it is
	// not prevented, so an estimate that is too low still shows.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(ms.Sys-ms.HeapReleased) + limit + 8<<20))
	base, _ := procStatusKB(t)
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset VmHWM (/proc/self/clear_refs): %v", err)
	}
	m, err := model.New(be, c.cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.fromFile {
		err = m.LoadBase(weights)
	} else {
		err = m.InitBase(1)
	}
	if err != nil {
		t.Fatal(err)
	}
	releaseMemory() // the host staging copy is garbage now
	if opts.Method == model.MethodLoRA {
		if err := m.InitLoRA(2); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.ZeroGrads(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.ForwardBackward(batch, 1/float32(batch.CountTargets()), 3); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(kernels.AdamWParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1, GradScale: 1}); err != nil {
		t.Fatal(err)
	}
	_, hwm := procStatusKB(t)
	runtime.KeepAlive(batch)
	m.Free()
	releaseMemory()
	return hwm - base
}

// TestEstimateMatchesMeasuredRSS trains small models on the CPU and checks
// the estimate (without the fixed runtime term) against the measured peak
// RSS increase, within 10%.
func TestEstimateMatchesMeasuredRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("trains several models")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	small := measureCfg(256, 688, 4, 4, 2, 8192)
	deep := measureCfg(192, 512, 8, 4, 4, 4096)
	wide := measureCfg(512, 1376, 2, 8, 2, 32000)
	cases := []measureCase{
		{name: "small lora r8 mb4", cfg: small, method: LoRA, rank: 8, mb: 4, seq: 256},
		{name: "small full mb2", cfg: small, method: Full, mb: 2, seq: 256},
		{name: "deep lora r16 mb8 recompute", cfg: deep, method: LoRA, rank: 16, mb: 8, seq: 128, recompute: true},
		{name: "deep lora r4 dropout mb2", cfg: deep, method: LoRA, rank: 4, dropout: 0.1, mb: 2, seq: 384},
		{name: "wide-vocab full mb1", cfg: wide, method: Full, mb: 1, seq: 512},
		// Loading sets the peak: LoRA, short sequences, a pretrained file.
		{name: "wide-vocab lora r8 mb1 (load)", cfg: wide, method: LoRA, rank: 8, mb: 1, seq: 64, fromFile: true},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-30s %12s %12s %8s %6s\n", "case", "estimate", "measured", "diff", "peak")
	for _, c := range cases {
		est, err := Estimate(c.cfg, Options{Method: c.method, LoRA: model.LoRAConfig{Rank: c.rank, Alpha: 1, Dropout: c.dropout, Targets: model.DefaultLoRATargets()},
			MicroBatch: c.mb, SeqLen: c.seq, Recompute: c.recompute, Device: CPU})
		if err != nil {
			t.Fatal(err)
		}
		want := est.Total - est.Term(TermRuntime).Bytes
		got := measurePeak(t, c, want)
		diff := float64(want-got) / float64(got)
		fmt.Fprintf(&report, "%-30s %12s %12s %+7.1f%% %6s\n", c.name, mib(want), mib(got), 100*diff, est.Peak())
		if math.Abs(diff) > 0.10 {
			t.Errorf("%s: estimate %s, measured peak RSS increase %s (%+.1f%%)\n%s", c.name, mib(want), mib(got), 100*diff, Table(est))
		}
	}
	t.Log(report.String())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
