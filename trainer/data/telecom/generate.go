package telecom

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"

	"github.com/peertune/peertune/trainer/data"
)

// Defaults of the built-in data set.
const (
	DefaultSeed        = 1         // generator seed of the built-in data set
	DefaultN           = 2200      // examples in the built-in data set (the SNR task holds 770 problems)
	DefaultCorpusBytes = 4_000_000 // bytes of the built-in pretraining corpus
)

// Source is Example.Source of generated examples.
const Source = "builtin:telecom"

// corpusShare: one problem in corpusShare is reserved for the pretraining
// corpus and never generated as an example (see reserved).
const corpusShare = 8

// reserved reports whether a problem belongs to the pretraining corpus: a
// fixed hash of its task and answer. Generate never emits a reserved problem
// and the corpus works through reserved problems only, so no train or eval
// problem is ever worked in the corpus.
func reserved(p problem) bool {
	h := fnv.New64a()
	h.Write([]byte(p.task + "\x00" + p.answer))
	return h.Sum64()%corpusShare == 0
}

// Generate returns n distinct telecom calculation examples in the seed's
// instruction format, with Task set and IDs "task-00042". It is a pure
// function of (seed, n), and Generate(seed, m) is a prefix of
// Generate(seed, n) for m < n. Problems are distinct: no two examples share
// an answer (every answer restates its inputs, so equal answers would be the
// same problem in other words), hence no two share a normalised text either.
// When the task space runs out (it holds about 580 thousand problems, nearly all of them link budgets) fewer
// than n examples are returned.
func Generate(seed uint64, n int) []data.Example {
	sp := specs()
	total := 0
	for _, s := range sp {
		total += s.weight
	}
	r := data.NewRNG(seed)
	seen := make(map[string]bool, n)
	out := make([]data.Example, 0, max(n, 0))
	for attempts := 0; len(out) < n && attempts < 50*n+1000; attempts++ {
		p := pickSpec(sp, total, r).draw(r)
		variant := r.IntN(len(p.prompts)) // drawn even when p is skipped: the stream stays aligned
		if reserved(p) || seen[p.answer] {
			continue
		}
		seen[p.answer] = true
		out = append(out, data.Example{
			ID:          fmt.Sprintf("%s-%05d", p.task, len(out)),
			Format:      data.FormatInstruction,
			Task:        p.task,
			Instruction: p.prompts[variant],
			Response:    p.answer,
			Source:      Source,
		})
	}
	return out
}

func pickSpec(sp []taskSpec, total int, r *data.RNG) taskSpec {
	x := r.IntN(total)
	for _, s := range sp {
		if x < s.weight {
			return s
		}
		x -= s.weight
	}
	return sp[len(sp)-1]
}

// TaskOf returns the task kind of ex: its Task, else the prefix of a
// generated ID ("snr-00042" -> "snr").
func TaskOf(ex data.Example) string {
	if ex.Task != "" {
		return ex.Task
	}
	if i := strings.LastIndexByte(ex.ID, '-'); i > 0 {
		return ex.ID[:i]
	}
	return ""
}

// Answer extracts the answer from generated text: its first line, trimmed,
// with runs of white space collapsed (generation may run on after the answer
// when the model does not stop).
func Answer(generated string) string {
	line, _, _ := strings.Cut(generated, "\n")
	return strings.Join(strings.Fields(line), " ")
}

// Score grades a generated response for ex. exact: the answer (see Answer)
// equals the reference response, case-sensitively (units such as mW and MW
// differ); formatOK: the answer matches the task's answer format
// (FormatPattern), whatever its numbers. An unknown task is never formatOK.
func Score(ex data.Example, generated string) (exact, formatOK bool) {
	ans := Answer(generated)
	exact = ans == Answer(ex.Response)
	if pat, ok := FormatPattern(TaskOf(ex)); ok {
		formatOK = regexp.MustCompile(pat).MatchString(ans)
	}
	return exact, formatOK
}

// Settled reports whether Score(ex, generated+more) is the same for every
// continuation "more": the answer line has ended, or what it holds so far is
// already incompatible both with the literal start of the task's answer
// format and with the reference answer (then it is neither exact nor
// formatOK). Evaluation uses it to stop decoding rows whose score is decided.
func Settled(ex data.Example, generated string) bool {
	if strings.Contains(generated, "\n") {
		return true
	}
	// The answer so far, normalised as Answer does (a trailing space could
	// still grow into a separator, and Fields drops it, which is safe).
	sofar := strings.Join(strings.Fields(generated), " ")
	compatible := func(target string) bool {
		return strings.HasPrefix(target, sofar) || strings.HasPrefix(sofar, target)
	}
	if compatible(Answer(ex.Response)) {
		return false
	}
	if pat, ok := FormatPattern(TaskOf(ex)); ok {
		if lit, _ := regexp.MustCompile(pat).LiteralPrefix(); compatible(strings.TrimLeft(lit, "^")) {
			return false
		}
	}
	return true
}

// Report aggregates Score over an evaluation set.
type Report struct {
	N, Exact, FormatOK int
	ByTask             map[string][3]int // task -> {n, exact, formatOK}
}

// Add scores one example.
func (r *Report) Add(ex data.Example, generated string) {
	exact, ok := Score(ex, generated)
	if r.ByTask == nil {
		r.ByTask = map[string][3]int{}
	}
	t := r.ByTask[TaskOf(ex)]
	t[0]++
	r.N++
	if exact {
		t[1]++
		r.Exact++
	}
	if ok {
		t[2]++
		r.FormatOK++
	}
	r.ByTask[TaskOf(ex)] = t
}

// String is a one-line summary: exact-match and format accuracy.
func (r Report) String() string {
	if r.N == 0 {
		return "telecom eval: no examples"
	}
	return fmt.Sprintf("telecom eval: %d examples, exact %.1f%%, format %.1f%%",
		r.N, 100*float64(r.Exact)/float64(r.N), 100*float64(r.FormatOK)/float64(r.N))
}
