package data

import (
	"fmt"
	"strings"
	"testing"
)

const longText = `Low-Rank Adaptation freezes the pre-trained weights and adds a trainable low-rank
decomposition to selected projection matrices. Because only the small adapter matrices are
updated, the optimizer state shrinks by orders of magnitude, and several task adapters can
share one frozen base model in memory while serving different customers at the same time.`

func instr(id, in, out string) Example {
	return Example{ID: id, Format: FormatInstruction, Instruction: in, Response: out}
}

func snr(id string, p, n int) Example {
	return instr(id, fmt.Sprintf("Compute the SNR for received power %d dBm and noise %d dBm", p, n),
		fmt.Sprintf("SNR = P_rx - N = %d - (%d) = %d dB", p, n, p-n))
}

func TestCheckOverlap(t *testing.T) {
	editedLong := strings.ReplaceAll(strings.ToUpper(longText[:1])+longText[1:], ",", ";")
	editedLong = strings.Replace(editedLong, "optimizer", "optimiser", 1)
	editedLong = strings.ReplaceAll(editedLong, "\n", "  ")

	train := []Example{
		instr("t0", "What does LoRA do?", longText),
		snr("t1", -80, -100),
		instr("t2", "Name the capital of France.", "Paris."),
		instr("t3", "Explain QLoRA.", "QLoRA quantises the base model to 4-bit NF4 and trains LoRA adapters on top."),
		{ID: "t4", Format: FormatChat, Messages: []Message{{RoleUser, "Define EIRP."}}, Response: "EIRP = P_tx + G_tx - L."},
		instr("t5", "List the powers.", "Powers: 10 20 30 40 50 60 70 80 90 100 110 120 130 140 150 160 170 180 190 200 dBm in steps of ten, listed from the lowest to the highest value."),
	}
	tests := []struct {
		name string
		eval Example
		kind string // "" = no overlap
		with string // train ID matched
	}{
		{"exact", snr("e", -80, -100), OverlapExact, "t1"},
		{"exact modulo case, space and format", Example{ID: "e", Format: FormatAlpaca, Instruction: "  NAME the capital of france. ", Response: "paris."}, OverlapExact, "t2"},
		{"chat vs instruction same content", instr("e", "define eirp.", "EIRP = P_tx + G_tx - L."), OverlapExact, "t4"},
		{"same prompt, other response", instr("e", "Name the capital of France.", "It is Paris, on the Seine."), OverlapPrompt, "t2"},
		{"lightly edited long example", instr("e", "What does LoRA do.", editedLong), OverlapNear, "t0"},
		{"long example, other instruction", instr("e", "Summarise LoRA in a paragraph.", longText), OverlapNear, "t0"},
		{"one number changed among many", instr("e", "List the powers!", "Powers: 10 20 30 40 50 60 70 80 90 100 110 120 130 140 150 160 170 180 190 205 dBm in steps of ten, listed from the lowest to the highest value."), OverlapNear, "t5"},
		{"numbers differ: one input", snr("e", -81, -100), "", ""},
		{"numbers differ: other input", snr("e", -80, -101), "", ""},
		{"numbers differ: swapped", snr("e", -100, -80), "", ""},
		{"numbers differ: both", snr("e", -62, -97), "", ""},
		{"short edited answer is a new example", instr("e", "Explain QLoRA briefly.", "QLoRA trains LoRA adapters on a 4-bit base."), "", ""},
		{"unrelated", instr("e", "What is the speed of light?", "About 3e8 m/s."), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := CheckOverlap(train, []Example{tc.eval}, OverlapOptions{})
			if tc.kind == "" {
				if len(rep.Matches) != 0 || rep.Err() != nil {
					t.Fatalf("unexpected overlap: %s", rep)
				}
				return
			}
			if len(rep.Matches) != 1 {
				t.Fatalf("want one %s match, got %s", tc.kind, rep)
			}
			m := rep.Matches[0]
			if m.Kind != tc.kind || m.TrainID != tc.with || rep.Count(tc.kind) != 1 {
				t.Fatalf("got %s with %s (%.2f), want %s with %s", m.Kind, m.TrainID, m.Similarity, tc.kind, tc.with)
			}
			if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "--allow-overlap") {
				t.Fatalf("Err() = %v", err)
			}
		})
	}
}

// Templated problems over a 10k x 1k grid: no overlap, and the index keeps
// this fast (a full comparison would be 10M pairs).
func TestCheckOverlapTemplatedScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	train, eval := snrGrid()
	rep := CheckOverlap(train, eval, OverlapOptions{})
	if len(rep.Matches) != 0 || rep.Train != 10000 || rep.Eval != 1000 {
		t.Fatalf("%s", rep)
	}
	// And the check still finds a planted duplicate among them.
	rep = CheckOverlap(train, append(eval, train[1234]), OverlapOptions{})
	if rep.Count(OverlapExact) != 1 || rep.Matches[0].Eval != 1000 {
		t.Fatalf("%s", rep)
	}
}

// snrGrid is 10k train and 1k eval distinct SNR problems.
func snrGrid() (train, eval []Example) {
	for p := -120; p < -20; p++ {
		for n := -130; n < -20; n++ {
			ex := snr(fmt.Sprint(p, n), p, n)
			switch {
			case (p*31+n*17)%11 == 0 && len(eval) < 1000:
				eval = append(eval, ex)
			case len(train) < 10000:
				train = append(train, ex)
			}
		}
	}
	return train, eval
}

func BenchmarkCheckOverlap10kx1k(b *testing.B) {
	train, eval := snrGrid()
	for b.Loop() {
		CheckOverlap(train, eval, OverlapOptions{})
	}
}

func TestWords(t *testing.T) {
	got := strings.Join(words("snr = p_rx - n = -80 - (-100) = 20 db; fspl 97.5, x-1 a-b 3.14.15 3.x"), "|")
	want := "snr|p_rx|n|-80|-100|20|db|fspl|97.5|x|-1|a|b|3.14.15|3|x"
	if got != want {
		t.Fatalf("words = %s\n want %s", got, want)
	}
}
