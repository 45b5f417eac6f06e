package data

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestEncodeMasking(t *testing.T) {
	tok := ByteTokenizer{}
	ex := instr("x", "Hi", "Yo")
	prompt := ex.Prompt()
	P := len(prompt) // byte tokenizer: one token per byte

	tests := []struct {
		name          string
		trainOnPrompt bool
		firstTarget   int // first token position that is a target
	}{
		{"response only", false, 1 + P},
		{"train on prompt", true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq, trunc, err := Encode(ex, tok, EncodeOptions{SeqLen: 64, TrainOnPrompt: tc.trainOnPrompt})
			if err != nil || trunc {
				t.Fatal(err, trunc)
			}
			want := append(append([]int32{tok.BOS()}, tok.Encode(prompt+"Yo")...), tok.EOS())
			if !slices.Equal(seq.Tokens, want) || len(seq.Labels) != len(seq.Tokens) || seq.ID != "x" {
				t.Fatalf("tokens %v labels %d", seq.Tokens, len(seq.Labels))
			}
			n := len(seq.Tokens)
			for pos := range n {
				want := IgnoreIndex
				if pos+1 < n && pos+1 >= tc.firstTarget {
					want = seq.Tokens[pos+1]
				}
				if seq.Labels[pos] != want {
					t.Fatalf("labels[%d] = %d, want %d", pos, seq.Labels[pos], want)
				}
			}
			// The response's first token is predicted from the last prompt position,
			// and the EOS is a target (the model learns to stop).
			if seq.Labels[P] != 'Y' || seq.Labels[n-2] != tok.EOS() || seq.Labels[n-1] != IgnoreIndex {
				t.Fatalf("labels[P]=%d labels[n-2]=%d labels[n-1]=%d", seq.Labels[P], seq.Labels[n-2], seq.Labels[n-1])
			}
			if !tc.trainOnPrompt && (seq.Labels[P-1] != IgnoreIndex || seq.Targets() != 3) {
				t.Fatalf("prompt trained on: labels[P-1]=%d targets %d", seq.Labels[P-1], seq.Targets())
			}
			if tc.trainOnPrompt && seq.Targets() != n-1 {
				t.Fatalf("targets %d, want %d", seq.Targets(), n-1)
			}
		})
	}
}

func TestEncodeLengths(t *testing.T) {
	tok := ByteTokenizer{}
	ex := instr("x", "Hi", "0123456789")
	full := 1 + len(ex.Prompt()) + 10 + 1
	P := len(ex.Prompt())
	tests := []struct {
		name     string
		seqLen   int
		truncate bool
		wantLen  int // 0: error
		trunc    bool
	}{
		{"fits exactly", full, false, full, false},
		{"too long is an error", full - 1, false, 0, false},
		{"too long truncates", full - 1, true, full - 1, true},
		{"truncate to one response token", P + 2, true, P + 2, true},
		{"prompt leaves no room", P + 1, true, 0, false},
		{"bad seq-len", 1, true, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq, trunc, err := Encode(ex, tok, EncodeOptions{SeqLen: tc.seqLen, Truncate: tc.truncate})
			if tc.wantLen == 0 {
				if err == nil {
					t.Fatal("no error")
				}
				if tc.seqLen > 1 && !errors.Is(err, ErrTooLong) {
					t.Fatalf("err %v is not ErrTooLong", err)
				}
				return
			}
			if err != nil || trunc != tc.trunc || len(seq.Tokens) != tc.wantLen {
				t.Fatalf("err %v trunc %v len %d", err, trunc, len(seq.Tokens))
			}
			if seq.Labels[len(seq.Labels)-1] != IgnoreIndex || seq.Targets() == 0 {
				t.Fatalf("labels %v", seq.Labels)
			}
			if trunc && slices.Contains(seq.Tokens, tok.EOS()) {
				t.Fatal("truncated sequence keeps EOS")
			}
		})
	}
}

func TestEncodeAllStats(t *testing.T) {
	tok := ByteTokenizer{}
	short := instr("s", "a", "b")
	long := instr("l", "a", strings.Repeat("r", 100))
	hopeless := instr("h", strings.Repeat("p", 100), "b")
	L := 1 + len(short.Prompt()) + 1 + 1
	exs := []Example{short, long, hopeless, short}

	_, _, err := EncodeAll(exs, tok, EncodeOptions{SeqLen: 40})
	if !errors.Is(err, ErrTooLong) || !strings.Contains(err.Error(), "encode l ") || !strings.Contains(err.Error(), "--truncate") {
		t.Fatalf("err = %v", err)
	}
	seqs, st, err := EncodeAll(exs, tok, EncodeOptions{SeqLen: 40, Truncate: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 3 || st.Sequences != 3 || st.Truncated != 1 || st.Dropped != 1 || st.MaxLen != 40 || st.Tokens != 2*L+40 {
		t.Fatalf("stats %+v", st)
	}
	if st.TargetTokens != 2*2+(40-1-len(long.Prompt())) {
		t.Fatalf("targets %d", st.TargetTokens)
	}
	if _, _, err := EncodeAll([]Example{hopeless}, tok, EncodeOptions{SeqLen: 40, Truncate: true}); !errors.Is(err, ErrEmptyDataset) {
		t.Fatalf("all dropped: %v", err)
	}
	if p := PromptTokens(short, tok); p[0] != tok.BOS() || len(p) != 1+len(short.Prompt()) {
		t.Fatalf("prompt tokens %v", p)
	}
}

func TestPackAndPad(t *testing.T) {
	seq := func(id string, n int) Sequence {
		s := Sequence{ID: id}
		for i := range n {
			s.Tokens = append(s.Tokens, int32(i+1))
			l := int32(i + 2)
			if i == n-1 {
				l = IgnoreIndex
			}
			s.Labels = append(s.Labels, l)
		}
		return s
	}
	seqs := []Sequence{seq("a", 3), seq("b", 4), seq("c", 5), seq("d", 2)}
	rows, err := Pack(seqs, 8, BytePAD)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := [][]string{{"a", "b"}, {"c", "d"}}
	wantPos := [][]int32{{0, 1, 2, 0, 1, 2, 3, 4}, {0, 1, 2, 3, 4, 0, 1, 2}}
	wantTok := [][]int32{{1, 2, 3, 1, 2, 3, 4, BytePAD}, {1, 2, 3, 4, 5, 1, 2, BytePAD}}
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	for i, r := range rows {
		if !slices.Equal(r.IDs, wantIDs[i]) || !slices.Equal(r.Positions, wantPos[i]) || !slices.Equal(r.Tokens, wantTok[i]) || len(r.Labels) != 8 {
			t.Fatalf("row %d: %+v", i, r)
		}
		if r.Labels[7] != IgnoreIndex {
			t.Fatalf("row %d pad carries a target", i)
		}
	}
	// Labels never cross a document boundary.
	if rows[0].Labels[2] != IgnoreIndex {
		t.Fatal("label crosses boundary")
	}
	if got := TargetTokens(rows); got != 2+3+4+1 {
		t.Fatalf("TargetTokens = %d", got)
	}

	pad, err := PadRows(seqs, 6, BytePAD)
	if err != nil {
		t.Fatal(err)
	}
	if len(pad) != 4 || !slices.Equal(pad[0].Positions, []int32{0, 1, 2, 3, 4, 5}) ||
		!slices.Equal(pad[0].Tokens, []int32{1, 2, 3, BytePAD, BytePAD, BytePAD}) || !slices.Equal(pad[0].Labels[3:], []int32{-100, -100, -100}) {
		t.Fatalf("padded row %+v", pad[0])
	}
	if _, err := PadRows(seqs, 4, BytePAD); err == nil {
		t.Fatal("PadRows accepted a sequence longer than seq-len")
	}
	if _, err := Pack(seqs, 4, BytePAD); err == nil {
		t.Fatal("Pack accepted a sequence longer than seq-len")
	}
}
