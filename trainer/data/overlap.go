package data

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"unicode"
)

// Near-duplicate detection defaults.
//
// Two examples are near duplicates when, on their normalised content
// (Example.Key: lower case, white space collapsed, template markers and roles
// dropped, and punctuation dropped by the word splitter):
//
//  1. the Jaccard similarity of their sets of word 3-shingles is at least
//     the threshold, and
//  2. the (multiset) Jaccard similarity of their number tokens ("-80",
//     "32.44") is at least the threshold (two texts without numbers pass).
//
// Rule 2 makes numbers significant: templated problems that differ only in
// their numbers ("... -80 dBm ..." vs "... -81 dBm ...") are different
// problems, while a long text with one edited word (or one changed number
// among many) is still caught. 0.8 catches a copy of a 40+ word example with
// one word changed, or with punctuation and case changed, and stays clear of
// the built-in telecom problems: on the built-in split no train/eval pair
// passes both rules at 0.7, and the closest (0.60) are two EIRP problems that
// share a phrasing and two of their three inputs.
const (
	DefaultNearThreshold = 0.8
	DefaultShingleSize   = 3
)

// MinHash/LSH index parameters: 20 bands of 5 rows. A pair with Jaccard J
// becomes a candidate with probability 1-(1-J^5)^20: 0.9996 at J=0.8, 0.47
// at J=0.5, 0.05 at J=0.3. Candidates are then compared exactly, so the index
// costs recall only below the threshold, never precision.
const (
	lshBands = 20
	lshRows  = 5
)

// OverlapOptions tunes CheckOverlap; zero fields take the defaults.
type OverlapOptions struct {
	Threshold   float64 // near-duplicate threshold (DefaultNearThreshold)
	ShingleSize int     // words per shingle (DefaultShingleSize)
}

// Overlap kinds, strongest first.
const (
	OverlapExact  = "exact"  // same normalised prompt and response
	OverlapPrompt = "prompt" // same normalised prompt, different response
	OverlapNear   = "near"   // near duplicate (see DefaultNearThreshold)
)

// OverlapMatch is the strongest match of one evaluation example in the
// training data.
type OverlapMatch struct {
	Kind        string  // OverlapExact, OverlapPrompt or OverlapNear
	Eval, Train int     // indices into the eval and train slices
	EvalID      string  // Example.ID of the eval example
	TrainID     string  // Example.ID of the train example
	EvalSource  string  // Example.Source of the eval example
	TrainSource string  // Example.Source of the train example
	Similarity  float64 // word-shingle Jaccard; 1 for exact
}

// OverlapReport says which evaluation examples also occur, exactly or
// nearly, in the training data.
type OverlapReport struct {
	Train, Eval int            // sizes checked
	Threshold   float64        // near-duplicate threshold used
	Matches     []OverlapMatch // one per contaminated eval example, in eval order
}

// Count returns the number of contaminated eval examples of a kind ("" = all).
func (r OverlapReport) Count(kind string) int {
	n := 0
	for _, m := range r.Matches {
		if kind == "" || m.Kind == kind {
			n++
		}
	}
	return n
}

// String summarises the report, with the first few matches.
func (r OverlapReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "overlap: %d of %d eval examples occur in %d train examples (exact %d, same prompt %d, near %d at Jaccard >= %.2f)",
		len(r.Matches), r.Eval, r.Train, r.Count(OverlapExact), r.Count(OverlapPrompt), r.Count(OverlapNear), r.Threshold)
	for i, m := range r.Matches {
		if i == 5 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Matches)-i)
			break
		}
		fmt.Fprintf(&b, "\n  %s: eval %s (%s) ~ train %s (%s), similarity %.2f", m.Kind, m.EvalID, m.EvalSource, m.TrainID, m.TrainSource, m.Similarity)
	}
	return b.String()
}

// Err is nil when no eval example overlaps the training data, and otherwise an
// error telling how to proceed; the trainer refuses to train on it unless the
// user passes --allow-overlap.
func (r OverlapReport) Err() error {
	if len(r.Matches) == 0 {
		return nil
	}
	return fmt.Errorf("%s\nevaluation data overlaps training data: remove the duplicates or pass --allow-overlap", r)
}

// CheckOverlap finds, for each eval example, its strongest match in train:
// an exact duplicate, the same prompt, or a near duplicate (see
// DefaultNearThreshold). Exact checks are hash lookups; near duplicates come
// from a MinHash/LSH index over train, with each candidate verified exactly,
// so 10k x 1k examples take well under a second, not 10M comparisons.
func CheckOverlap(train, eval []Example, opts OverlapOptions) OverlapReport {
	if opts.Threshold <= 0 {
		opts.Threshold = DefaultNearThreshold
	}
	if opts.ShingleSize <= 0 {
		opts.ShingleSize = DefaultShingleSize
	}
	rep := OverlapReport{Train: len(train), Eval: len(eval), Threshold: opts.Threshold}

	exact := make(map[string]int, len(train))
	prompt := make(map[string]int, len(train))
	feats := make([]features, len(train))
	index := make(map[uint64][]int32)
	for i, ex := range train {
		key := ex.Key()
		if _, ok := exact[key]; !ok {
			exact[key] = i
		}
		if pk := ex.PromptKey(); pk != "" {
			if _, ok := prompt[pk]; !ok {
				prompt[pk] = i
			}
		}
		feats[i] = newFeatures(key, opts.ShingleSize)
		for _, bk := range feats[i].bandKeys() {
			index[bk] = append(index[bk], int32(i))
		}
	}

	seen := make([]int, len(train)) // seen[j] == e+1: train j already a candidate of eval e
	for e, ex := range eval {
		key := ex.Key()
		m := OverlapMatch{Eval: e, Train: -1}
		if t, ok := exact[key]; ok {
			m.Kind, m.Train, m.Similarity = OverlapExact, t, 1
		} else if t, ok := prompt[ex.PromptKey()]; ok {
			m.Kind, m.Train = OverlapPrompt, t
			m.Similarity = jaccard(feats[t].shingles, newFeatures(key, opts.ShingleSize).shingles)
		} else {
			f := newFeatures(key, opts.ShingleSize)
			for _, bk := range f.bandKeys() {
				for _, t32 := range index[bk] {
					t := int(t32)
					if seen[t] == e+1 {
						continue
					}
					seen[t] = e + 1
					j := jaccard(f.shingles, feats[t].shingles)
					if j >= opts.Threshold && j > m.Similarity && jaccard(f.numbers, feats[t].numbers) >= opts.Threshold {
						m.Kind, m.Train, m.Similarity = OverlapNear, t, j
					}
				}
			}
		}
		if m.Train >= 0 {
			m.EvalID, m.EvalSource = ex.ID, ex.Source
			m.TrainID, m.TrainSource = train[m.Train].ID, train[m.Train].Source
			rep.Matches = append(rep.Matches, m)
		}
	}
	return rep
}

// features are what near-duplicate detection compares.
type features struct {
	shingles []uint64 // sorted, unique hashes of word k-shingles
	numbers  []string // sorted number tokens (a multiset)
	minhash  [lshBands * lshRows]uint64
}

func newFeatures(key string, k int) features {
	w := words(key)
	var f features
	for _, t := range w {
		if isNumber(t) {
			f.numbers = append(f.numbers, t)
		}
	}
	slices.Sort(f.numbers)
	if len(w) > 0 && len(w) < k {
		k = len(w) // a short text is one shingle
	}
	for i := 0; i+k <= len(w); i++ {
		h := fnv.New64a()
		for _, t := range w[i : i+k] {
			h.Write([]byte(t))
			h.Write([]byte{0})
		}
		f.shingles = append(f.shingles, h.Sum64())
	}
	slices.Sort(f.shingles)
	f.shingles = slices.Compact(f.shingles)
	for i := range f.minhash {
		f.minhash[i] = ^uint64(0)
	}
	for _, s := range f.shingles {
		for i := range f.minhash {
			if v := mix64(s ^ mix64(uint64(i)+1)); v < f.minhash[i] {
				f.minhash[i] = v
			}
		}
	}
	return f
}

// bandKeys are the LSH bucket keys of f (none for a text without words).
func (f *features) bandKeys() []uint64 {
	if len(f.shingles) == 0 {
		return nil
	}
	keys := make([]uint64, lshBands)
	for b := range keys {
		h := mix64(uint64(b) + 0x51)
		for _, v := range f.minhash[b*lshRows : (b+1)*lshRows] {
			h = mix64(h ^ v)
		}
		keys[b] = h
	}
	return keys
}

// words splits normalised text into word tokens: runs of letters, digits and
// '_', where a '-' directly before a digit starts a (negative) number and a
// '.' between digits stays inside it. Other punctuation separates words and
// is dropped.
func words(s string) []string {
	rs := []rune(s)
	isW := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' }
	var out []string
	for i := 0; i < len(rs); {
		if !isW(rs[i]) && !(rs[i] == '-' && i+1 < len(rs) && unicode.IsDigit(rs[i+1])) {
			i++
			continue
		}
		j := i + 1
		for j < len(rs) && (isW(rs[j]) || (rs[j] == '.' && unicode.IsDigit(rs[j-1]) && j+1 < len(rs) && unicode.IsDigit(rs[j+1]))) {
			j++
		}
		out = append(out, string(rs[i:j]))
		i = j
	}
	return out
}

// isNumber reports whether a word token is a number: optional '-', digits, at
// most one '.'.
func isNumber(t string) bool {
	t = strings.TrimPrefix(t, "-")
	digits, dots := 0, 0
	for _, r := range t {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// jaccard is the (multiset) Jaccard similarity of two sorted slices:
// sum of min counts / sum of max counts, which for unique elements is
// |a∩b| / |a∪b|. It is 1 when both are empty.
func jaccard[T cmp.Ordered](a, b []T) float64 {
	if len(a) == 0 && len(b) == 0 {
		return 1
	}
	inter := 0
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] == b[j]:
			inter++
			i++
			j++
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return float64(inter) / float64(len(a)+len(b)-inter)
}
