package data

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Fractions are the shares of the validation and test splits; training gets
// the rest. Each must be in [0, 1) and their sum < 1.
type Fractions struct {
	Val, Test float64
}

// Validate checks the fractions.
func (f Fractions) Validate() error {
	if !(f.Val >= 0 && f.Val < 1) || !(f.Test >= 0 && f.Test < 1) || !(f.Val+f.Test < 1) {
		return fmt.Errorf("split fractions val=%g test=%g: each must be in [0,1) and their sum < 1", f.Val, f.Test)
	}
	return nil
}

// Splits are the three disjoint parts of a data set.
type Splits struct {
	Train, Val, Test []Example
}

// Split assigns every example to train, validation or test by a stable hash
// of its normalised content (Example.Key: case, white space and template
// markers do not count) and seed. It runs first, before tokenisation,
// truncation, packing or any filtering, so that an example lands in the same
// split whatever the file order, the other examples, the tokenizer or the
// sequence length: held-out examples stay held out when the data set grows.
// Exact duplicates always land in the same split. Input order is kept inside
// each split. Keep seed fixed for a data set: another seed is another split.
func Split(examples []Example, f Fractions, seed uint64) (Splits, error) {
	if err := f.Validate(); err != nil {
		return Splits{}, err
	}
	var s Splits
	for _, ex := range examples {
		u := splitPoint(seed, ex)
		switch {
		case u < f.Test:
			s.Test = append(s.Test, ex)
		case u < f.Test+f.Val:
			s.Val = append(s.Val, ex)
		default:
			s.Train = append(s.Train, ex)
		}
	}
	return s, nil
}

// splitPoint maps an example to a uniform number in [0, 1).
func splitPoint(seed uint64, ex Example) float64 {
	return float64(keyHash(seed, ex.Key())>>11) / (1 << 53)
}

// keyHash is the first 8 bytes of SHA-256(seed as 8 little-endian bytes ||
// key): fixed by its definition, so stable across Go versions and machines.
func keyHash(seed uint64, key string) uint64 {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
