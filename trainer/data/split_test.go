package data

import (
	"fmt"
	"math"
	"testing"
)

func mkExamples(n int) []Example {
	exs := make([]Example, n)
	for i := range exs {
		exs[i] = Example{ID: fmt.Sprint(i), Format: FormatInstruction,
			Instruction: fmt.Sprintf("Question number %d about topic %d", i, i*7%13), Response: fmt.Sprintf("Answer %d", i*i)}
	}
	return exs
}

func splitOf(s Splits) map[string]string {
	m := map[string]string{}
	for name, part := range map[string][]Example{"train": s.Train, "val": s.Val, "test": s.Test} {
		for _, ex := range part {
			m[ex.ID] = name
		}
	}
	return m
}

func TestSplitStable(t *testing.T) {
	exs := mkExamples(4000)
	f := Fractions{Val: 0.1, Test: 0.05}
	base, err := Split(exs, f, 7)
	if err != nil {
		t.Fatal(err)
	}
	where := splitOf(base)

	// Fractions roughly right (binomial sd ~ 19 and 14 here).
	if n := len(base.Val); math.Abs(float64(n)-400) > 80 {
		t.Errorf("val %d, want ~400", n)
	}
	if n := len(base.Test); math.Abs(float64(n)-200) > 60 {
		t.Errorf("test %d, want ~200", n)
	}
	if len(base.Train)+len(base.Val)+len(base.Test) != len(exs) {
		t.Fatal("split lost examples")
	}

	// Reversed order and a subset with other examples added: same split per example.
	var rev []Example
	for i := len(exs) - 1; i >= 0; i-- {
		if i%3 != 0 {
			rev = append(rev, exs[i])
		}
	}
	rev = append(rev, mkExamples(4500)[4000:]...)
	// Cosmetic changes (case, white space, template format) do not move an example.
	edited := exs[10]
	edited.Instruction = "  QUESTION   number 10 about\ttopic 5 "
	edited.Format = FormatAlpaca
	rev = append(rev, edited)
	other, err := Split(rev, f, 7)
	if err != nil {
		t.Fatal(err)
	}
	for id, w := range splitOf(other) {
		if prev, ok := where[id]; ok && prev != w {
			t.Fatalf("example %s moved from %s to %s", id, prev, w)
		}
	}
	// Order inside a split is the input order.
	for i := 1; i < len(base.Train); i++ {
		var a, b int
		fmt.Sscan(base.Train[i-1].ID, &a)
		fmt.Sscan(base.Train[i].ID, &b)
		if a >= b {
			t.Fatalf("train order broken at %d: %d then %d", i, a, b)
		}
	}
	// Another seed is another split.
	s2, _ := Split(exs, f, 8)
	moved := 0
	for id, w := range splitOf(s2) {
		if where[id] != w {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("seed does not change the split")
	}
}

func TestSplitFractionsValidate(t *testing.T) {
	for _, f := range []Fractions{{-0.1, 0}, {0.5, 0.5}, {1, 0}, {math.NaN(), 0}} {
		if _, err := Split(mkExamples(3), f, 1); err == nil {
			t.Errorf("fractions %+v accepted", f)
		}
	}
	s, err := Split(mkExamples(50), Fractions{}, 1)
	if err != nil || len(s.Train) != 50 {
		t.Fatalf("zero fractions: %v, %d train", err, len(s.Train))
	}
}
