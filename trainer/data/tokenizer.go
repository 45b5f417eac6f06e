package data

import "strings"

// Tokenizer turns text into token ids and back.
//
// Contract: Encode never adds special tokens (callers add BOS/EOS where a
// format needs them); Decode never panics, whatever the ids (out-of-range and
// special ids are dropped, invalid UTF-8 becomes U+FFFD). A model can be used
// with a tokenizer when the model's vocabulary size is >= VocabSize(): every id
// the tokenizer emits is < VocabSize(), and extra model ids are never produced
// by the data (their logits are simply trained towards zero probability).
// Implementations must be safe for concurrent use.
type Tokenizer interface {
	Encode(s string) []int32
	Decode(ids []int32) string
	VocabSize() int
	BOS() int32
	EOS() int32
	PAD() int32
}

// Byte-level vocabulary: ids 0..255 are the bytes of the UTF-8 text, then the
// three special tokens.
const (
	ByteBOS       int32 = 256
	ByteEOS       int32 = 257
	BytePAD       int32 = 258
	ByteVocabSize       = 259
)

// ByteTokenizer is the default tokenizer: one token per byte of UTF-8 text
// plus <bos>, <eos> and <pad>. The text "<eos>" encodes as its five bytes,
// never as the special token, so data cannot inject special tokens.
// The zero value is ready to use.
type ByteTokenizer struct{}

var _ Tokenizer = ByteTokenizer{}

// Encode returns one id per byte of s.
func (ByteTokenizer) Encode(s string) []int32 {
	ids := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int32(s[i])
	}
	return ids
}

// Decode returns the text of the byte ids in ids. Special ids (BOS, EOS,
// PAD) and ids outside 0..255 (a model vocabulary may be larger than 259) are
// dropped; byte sequences that are not valid UTF-8 (e.g. a generation cut in
// the middle of a multi-byte rune) are replaced by U+FFFD.
func (ByteTokenizer) Decode(ids []int32) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < 256 {
			b = append(b, byte(id))
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// VocabSize is 259: 256 bytes and 3 special tokens.
func (ByteTokenizer) VocabSize() int { return ByteVocabSize }

// BOS is the begin-of-sequence id (256).
func (ByteTokenizer) BOS() int32 { return ByteBOS }

// EOS is the end-of-sequence id (257); it ends every response.
func (ByteTokenizer) EOS() int32 { return ByteEOS }

// PAD is the padding id (258); padded positions never carry a target.
func (ByteTokenizer) PAD() int32 { return BytePAD }
