package telecom

import (
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/peertune/peertune/trainer/data"
)

const seedPrompt, seedAnswer = "Compute the SNR for received power -80 dBm and noise -100 dBm", "SNR = P_rx - N = -80 - (-100) = 20 dB"

func TestGenerateDeterministicAndDistinct(t *testing.T) {
	a := Generate(7, 3000)
	b := Generate(7, 3000)
	if len(a) != 3000 || !reflect.DeepEqual(a, b) {
		t.Fatalf("not deterministic (len %d)", len(a))
	}
	if prefix := Generate(7, 1000); !reflect.DeepEqual(prefix, a[:1000]) {
		t.Fatal("Generate(seed, m) is not a prefix of Generate(seed, n)")
	}
	if other := Generate(8, 100); reflect.DeepEqual(other, a[:100]) {
		t.Fatal("seed ignored")
	}
	keys, answers, ids := map[string]bool{}, map[string]bool{}, map[string]bool{}
	perTask := map[string]int{}
	for _, ex := range a {
		if keys[ex.Key()] || answers[ex.Response] || ids[ex.ID] {
			t.Fatalf("duplicate example %s: %q", ex.ID, ex.Response)
		}
		keys[ex.Key()], answers[ex.Response], ids[ex.ID] = true, true, true
		if ex.Format != data.FormatInstruction || ex.Source != Source || !strings.HasPrefix(ex.ID, ex.Task+"-") || TaskOf(ex) != ex.Task {
			t.Fatalf("bad example %+v", ex)
		}
		perTask[ex.Task]++
	}
	for _, task := range Tasks() {
		if perTask[task] == 0 {
			t.Errorf("task %s never generated", task)
		}
	}
	if len(Generate(1, 0)) != 0 || len(Generate(1, -5)) != 0 {
		t.Fatal("n <= 0 must give no examples")
	}
}

var numRE = regexp.MustCompile(`-?\d+(\.\d+)?`)

// nums returns the numbers of s, in order.
func nums(t *testing.T, s string) []float64 {
	t.Helper()
	var out []float64
	for _, m := range numRE.FindAllString(s, -1) {
		v, err := strconv.ParseFloat(m, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// expected recomputes an example's answer from its question alone.
func expected(t *testing.T, ex data.Example) string {
	t.Helper()
	q := nums(t, ex.Instruction)
	i := func(k int) int { return int(q[k]) }
	switch ex.Task {
	case TaskSNR:
		return fmt.Sprintf("SNR = P_rx - N = %d - (%d) = %d dB", i(0), i(1), i(0)-i(1))
	case TaskLinkBudget:
		return fmt.Sprintf("P_rx = P_tx + G_tx + G_rx - L = %d + %d + %d - %d = %d dBm", i(0), i(1), i(2), i(3), i(0)+i(1)+i(2)-i(3))
	case TaskEIRP:
		return fmt.Sprintf("EIRP = P_tx + G_tx - L = %d + %d - %d = %d dBm", i(0), i(1), i(2), i(0)+i(1)-i(2))
	case TaskThermalNoise:
		unit := map[string]float64{"kHz": 1e3, "MHz": 1e6, "GHz": 1e9}
		m := regexp.MustCompile(`(\d+) (kHz|MHz|GHz)`).FindStringSubmatch(ex.Instruction)
		hz, _ := strconv.ParseFloat(m[1], 64)
		b := int(math.Round(10 * math.Log10(hz*unit[m[2]])))
		return fmt.Sprintf("N = -174 + 10log10(B) + NF = -174 + %d + %d = %d dBm", b, i(1), -174+b+i(1))
	case TaskFSPL:
		d, f := q[0], q[1]
		v := 20*math.Log10(d) + 20*math.Log10(f) + 32.44
		return fmt.Sprintf("FSPL = 20log10(%g) + 20log10(%g) + 32.44 = %.1f dB", d, f, math.Round(v*10)/10)
	case TaskCapacity:
		b, s := i(0), i(1)
		k := math.Log2(float64(s + 1))
		if k != math.Trunc(k) {
			t.Fatalf("%s: SNR+1 = %d is not a power of two", ex.ID, s+1)
		}
		return fmt.Sprintf("C = B log2(1 + SNR) = %d * log2(1 + %d) = %d * %d = %d Mbit/s", b, s, b, int(k), b*int(k))
	case TaskDBWToDBm:
		return fmt.Sprintf("P = %d + 30 = %d dBm", i(0), i(0)+30)
	case TaskDBmToDBW:
		return fmt.Sprintf("P = %d - 30 = %d dBW", i(0), i(0)-30)
	case TaskDBmToMW:
		return fmt.Sprintf("P = 10^(%d/10) mW = %s mW", i(0), strconv.FormatFloat(math.Pow(10, q[0]/10), 'f', -1, 64))
	case TaskMWToDBm:
		return fmt.Sprintf("P = 10log10(%s) dBm = %d dBm", numRE.FindString(ex.Instruction), int(math.Round(10*math.Log10(q[0]))))
	case TaskDBToLinear:
		return fmt.Sprintf("ratio = 10^(%d/10) = %s", i(0), strconv.FormatFloat(math.Pow(10, q[0]/10), 'f', -1, 64))
	case TaskLinearToDB:
		return fmt.Sprintf("G = 10log10(%s) = %d dB", numRE.FindString(ex.Instruction), int(math.Round(10*math.Log10(q[0]))))
	}
	t.Fatalf("unknown task %q", ex.Task)
	return ""
}

func TestAnswersCorrectAndWellFormed(t *testing.T) {
	for _, ex := range Generate(DefaultSeed, DefaultN) {
		if want := expected(t, ex); ex.Response != want {
			t.Fatalf("%s: %q\n answer %q\n   want %q", ex.ID, ex.Instruction, ex.Response, want)
		}
		if exact, ok := Score(ex, ex.Response); !exact || !ok {
			t.Fatalf("%s: reference scores exact=%v format=%v: %q", ex.ID, exact, ok, ex.Response)
		}
	}
}

func TestSeedExampleFormat(t *testing.T) {
	pat, ok := FormatPattern(TaskSNR)
	if !ok || !regexp.MustCompile(pat).MatchString(seedAnswer) {
		t.Fatalf("the seed's answer does not match the snr format %q", pat)
	}
	// The seed's exact question is one of the generator's problems.
	found := false
	r := data.NewRNG(0)
	for range 200000 {
		if p := drawSNR(r); p.prompts[0] == seedPrompt {
			found = p.answer == seedAnswer
			break
		}
	}
	if !found {
		t.Fatal("drawSNR never produces the seed's example")
	}
}

func TestScore(t *testing.T) {
	ex := data.Example{ID: "snr-00001", Instruction: seedPrompt, Response: seedAnswer}
	tests := []struct {
		name        string
		gen         string
		exact, form bool
	}{
		{"exact", seedAnswer, true, true},
		{"runs on after the answer", seedAnswer + "\n### Instruction:\nmore", true, true},
		{"extra spaces", "  SNR =  P_rx - N = -80 - (-100) = 20 dB ", true, true},
		{"wrong number, right format", "SNR = P_rx - N = -80 - (-100) = 30 dB", false, true},
		{"missing parentheses", "SNR = P_rx - N = -80 - -100 = 20 dB", false, false},
		{"prose answer", "The SNR is 20 dB.", false, false},
		{"case matters", "snr = p_rx - n = -80 - (-100) = 20 db", false, false},
		{"empty", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exact, form := Score(ex, tc.gen)
			if exact != tc.exact || form != tc.form {
				t.Fatalf("Score(%q) = %v, %v; want %v, %v", tc.gen, exact, form, tc.exact, tc.form)
			}
		})
	}
	if _, form := Score(data.Example{ID: "x", Response: "a"}, "a"); form {
		t.Fatal("unknown task is formatOK")
	}
	var rep Report
	rep.Add(ex, seedAnswer)
	rep.Add(ex, "SNR = P_rx - N = -80 - (-100) = 21 dB")
	rep.Add(ex, "no")
	if rep.N != 3 || rep.Exact != 1 || rep.FormatOK != 2 || rep.ByTask[TaskSNR] != [3]int{3, 1, 2} {
		t.Fatalf("report %+v", rep)
	}
	if s := rep.String(); s != "telecom eval: 3 examples, exact 33.3%, format 66.7%" {
		t.Fatalf("report %q", s)
	}
}

// The built-in data set, split as the trainer splits it, has zero
// train/eval overlap (the seed's contamination mistake, avoided).
func TestBuiltinSplitHasNoOverlap(t *testing.T) {
	exs := Generate(DefaultSeed, DefaultN)
	sp, err := data.Split(exs, data.Fractions{Val: 0.05, Test: 0.05}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.Val) < 80 || len(sp.Test) < 80 {
		t.Fatalf("val %d test %d", len(sp.Val), len(sp.Test))
	}
	rep := data.CheckOverlap(sp.Train, append(append([]data.Example{}, sp.Val...), sp.Test...), data.OverlapOptions{})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	// ... and the check would notice a leaked, lightly edited eval example.
	leak := sp.Test[0]
	leak.Instruction = strings.ToUpper(leak.Instruction) + "!"
	rep = data.CheckOverlap(append(sp.Train, leak), sp.Test, data.OverlapOptions{})
	if rep.Count("") != 1 {
		t.Fatalf("leak not found: %s", rep)
	}
}

func TestCorpus(t *testing.T) {
	const n = 100_000
	text, worked := corpus(3, n)
	if text != Corpus(3, n) {
		t.Fatal("corpus not deterministic")
	}
	if Corpus(4, 2000) == Corpus(3, 2000) {
		t.Fatal("seed ignored")
	}
	if len(text) < n || len(text) > n+2000 || !strings.HasSuffix(text, "\n") {
		t.Fatalf("corpus length %d for %d", len(text), n)
	}
	// Never the template or the answer format: every answer contains "=".
	if strings.ContainsAny(text, "=#") {
		t.Fatal("corpus contains '=' or '#'")
	}
	for _, piece := range []string{"dBm", "signal-to-noise", "-174 dBm", "log2 of", "the signal is", "minus"} {
		if !strings.Contains(text, piece) {
			t.Errorf("corpus lacks %q", piece)
		}
	}
	// Worked problems are reserved ones, which Generate never emits.
	if len(worked) < 100 {
		t.Fatalf("only %d worked problems", len(worked))
	}
	gen := map[string]bool{}
	for _, ex := range Generate(DefaultSeed, DefaultN) {
		gen[ex.Response] = true
	}
	for _, p := range worked {
		if !reserved(p) || gen[p.answer] {
			t.Fatalf("corpus works a generated problem: %q", p.answer)
		}
	}
}

// The default corpus contains none of the held-out questions or answers verbatim.
func TestCorpusExcludesEvalStrings(t *testing.T) {
	text := Corpus(DefaultSeed, DefaultCorpusBytes)
	sp, err := data.Split(Generate(DefaultSeed, DefaultN), data.Fractions{Val: 0.05, Test: 0.05}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range append(sp.Val, sp.Test...) {
		if strings.Contains(text, ex.Response) || strings.Contains(text, ex.Instruction) {
			t.Fatalf("corpus contains eval example %s", ex.ID)
		}
	}
}

func TestWriteGeneratedJSONL(t *testing.T) {
	exs := Generate(DefaultSeed, 50)
	path := filepath.Join(t.TempDir(), "telecom.jsonl")
	if err := data.WriteJSONL(path, exs); err != nil {
		t.Fatal(err)
	}
	back, st, err := data.ReadJSONL(path, data.ReadOptions{})
	if err != nil || st.ByFormat[data.FormatInstruction] != 50 {
		t.Fatalf("%v %+v", err, st)
	}
	for i := range back {
		back[i].Source = Source
	}
	if !reflect.DeepEqual(back, exs) {
		t.Fatal("round trip changed the examples")
	}
}

func TestSettled(t *testing.T) {
	ex := data.Example{ID: "snr-00001", Instruction: seedPrompt, Response: seedAnswer}
	tests := []struct {
		gen     string
		settled bool
	}{
		{"", false},
		{"  ", false},
		{"SNR", false},
		{"SNR = P_rx - N = -80 - (-1", false}, // the reference so far
		{"SNR  =  P_rx", false},               // white space is normalised
		{"SNR = P_rx - N = -70 - (-9", false}, // another answer in the format
		{"SNR = P_rx - N = -80 - (-100) = 20 dB", false},
		{seedAnswer + " and more", false}, // format check decides at the end of the line
		{seedAnswer + "\n", true},         // the line has ended
		{"S\nNR", true},
		{"The SNR", true}, // prose: neither the format nor the answer
		{"SNR is", true},  // leaves the format's literal start
		{"SNR=", true},    // the format needs a space
		{" 20 dB above", true},
	}
	for _, tc := range tests {
		if got := Settled(ex, tc.gen); got != tc.settled {
			t.Errorf("Settled(%q) = %v, want %v", tc.gen, got, tc.settled)
		}
		// Settled must never hide a score: a settled prefix scores the same
		// with any continuation.
		if Settled(ex, tc.gen) {
			e0, f0 := Score(ex, tc.gen)
			for _, more := range []string{"SNR = P_rx - N = -80 - (-100) = 20 dB", " = 20 dB", "\nx"} {
				if exact, form := Score(ex, tc.gen+more); exact != e0 || form != f0 {
					t.Errorf("Settled(%q) but %q scores exact=%v format=%v", tc.gen, tc.gen+more, exact, form)
				}
			}
		}
	}
	// An unknown task can only be exact.
	other := data.Example{ID: "x", Response: "42 apples"}
	if Settled(other, "42 ap") || !Settled(other, "42 b") {
		t.Error("unknown task: settled only when the reference is out of reach")
	}
}

// The data set is mostly the seed's SNR task, over the ranges whose
// arithmetic the corpus drills.
func TestTaskMixAndRanges(t *testing.T) {
	exs := Generate(DefaultSeed, DefaultN)
	per := map[string]int{}
	for _, ex := range exs {
		per[ex.Task]++
		if ex.Task != TaskSNR {
			continue
		}
		q := nums(t, ex.Instruction)
		p, n := int(q[0]), int(q[1])
		if p < -99 || p > -30 || n < -130 || n > -80 || n%5 != 0 {
			t.Fatalf("%s: received power %d, noise %d out of range", ex.ID, p, n)
		}
	}
	for task, c := range per {
		if task != TaskSNR && c >= per[TaskSNR] {
			t.Errorf("task %s has %d examples, snr only %d", task, c, per[TaskSNR])
		}
	}
	if per[TaskSNR] < len(exs)/4 {
		t.Errorf("snr is %d of %d examples", per[TaskSNR], len(exs))
	}
}

// exprRE matches an arithmetic statement of the corpus: numbers joined by
// operators, then "is" or "leaves" and the result.
var exprRE = regexp.MustCompile(`(?:^|[\s:])((?:-?\d+|\(-?\d+\))(?: (?:minus|plus|times|-|\+|\*) (?:-?\d+|\(-?\d+\)))+) (?:is|leaves) (-?\d+)\b`)

// Every arithmetic statement in the corpus is right (evaluated left to right).
func TestCorpusArithmeticIsRight(t *testing.T) {
	text := Corpus(DefaultSeed, 1_000_000)
	checked := map[string]int{}
	for _, m := range exprRE.FindAllStringSubmatch(text, -1) {
		f := strings.Fields(strings.NewReplacer("(", "", ")", "").Replace(m[1]))
		val, _ := strconv.Atoi(f[0])
		for i := 1; i+1 < len(f); i += 2 {
			x, _ := strconv.Atoi(f[i+1])
			switch f[i] {
			case "minus", "-":
				val -= x
			case "plus", "+":
				val += x
			case "times", "*":
				val *= x
			}
			checked[f[i]]++
		}
		if want, _ := strconv.Atoi(m[2]); val != want {
			t.Fatalf("corpus says %q is %s; it is %d", m[1], m[2], val)
		}
	}
	for _, op := range []string{"minus", "-", "plus", "+", "times", "*"} {
		if checked[op] < 100 {
			t.Errorf("only %d statements with %q checked", checked[op], op)
		}
	}
}
