package data

import (
	"slices"
	"testing"
	"unicode/utf8"
)

func TestByteTokenizer(t *testing.T) {
	var tok Tokenizer = ByteTokenizer{}
	tests := []struct {
		name string
		in   string
		ids  []int32
	}{
		{"ascii", "SNR", []int32{'S', 'N', 'R'}},
		{"empty", "", []int32{}},
		{"utf8", "é", []int32{0xC3, 0xA9}},
		{"special text is bytes", "<eos>", []int32{'<', 'e', 'o', 's', '>'}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tok.Encode(tc.in)
			if !slices.Equal(got, tc.ids) {
				t.Fatalf("Encode(%q) = %v, want %v", tc.in, got, tc.ids)
			}
			if back := tok.Decode(got); back != tc.in {
				t.Fatalf("Decode(Encode(%q)) = %q", tc.in, back)
			}
		})
	}
	if tok.VocabSize() != 259 || tok.BOS() != 256 || tok.EOS() != 257 || tok.PAD() != 258 {
		t.Fatalf("vocab %d bos %d eos %d pad %d", tok.VocabSize(), tok.BOS(), tok.EOS(), tok.PAD())
	}
}

func TestByteTokenizerDecodeNeverPanics(t *testing.T) {
	tok := ByteTokenizer{}
	tests := []struct {
		name string
		ids  []int32
		want string
	}{
		{"specials dropped", []int32{256, 'h', 'i', 257, 258}, "hi"},
		{"out of range dropped", []int32{-1, 'a', 259, 1 << 30, 'b'}, "ab"},
		{"cut rune", []int32{'a', 0xC3}, "a\uFFFD"},
		{"invalid byte", []int32{0xFF, 'x'}, "\uFFFDx"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tok.Decode(tc.ids)
			if got != tc.want || !utf8.ValidString(got) {
				t.Fatalf("Decode(%v) = %q, want %q", tc.ids, got, tc.want)
			}
		})
	}
}
