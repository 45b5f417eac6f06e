package safetensors

import (
	"math"
)

// DType is a safetensors element type, spelled as in the file header.
type DType string

// The element types this package knows. F32, F16 and BF16 can be read as
// float32 and written; I32 and I64 can be read as int64. The others are only
// recognised, so that a file holding them still parses (their sizes are
// validated) and their tensors are listed; reading them is an error.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	F64  DType = "F64"
	I32  DType = "I32"
	I64  DType = "I64"

	BOOL   DType = "BOOL"
	U8     DType = "U8"
	I8     DType = "I8"
	I16    DType = "I16"
	U16    DType = "U16"
	U32    DType = "U32"
	U64    DType = "U64"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	F8E8M0 DType = "F8_E8M0"
)

var dtypeSize = map[DType]int{
	BOOL: 1, U8: 1, I8: 1, F8E4M3: 1, F8E5M2: 1, F8E8M0: 1,
	I16: 2, U16: 2, F16: 2, BF16: 2,
	I32: 4, U32: 4, F32: 4,
	I64: 8, U64: 8, F64: 8,
}

// Size is the size of one element in bytes, or 0 for an unknown dtype.
func (d DType) Size() int { return dtypeSize[d] }

// isFloat reports whether tensors of this dtype can be read as float32.
func (d DType) isFloat() bool { return d == F32 || d == F16 || d == BF16 || d == F64 }

// isInt reports whether tensors of this dtype can be read as int64.
func (d DType) isInt() bool { return d == I32 || d == I64 }

// isWritable reports whether Write can store tensors in this dtype.
func (d DType) isWritable() bool { return d == F32 || d == F16 || d == BF16 }

// bf16ToF32 widens a bfloat16 bit pattern; exact.
func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// f32ToBF16 narrows to bfloat16 with round-to-nearest-even. Overflow rounds to
// ±Inf as RNE dictates; NaN stays NaN (quietened, sign kept).
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: truncating could yield Inf
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// f16ToF32 widens an IEEE 754 binary16 bit pattern; exact, subnormals included.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(113) // 127 - 15 + 1
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// f32ToF16 narrows to IEEE 754 binary16 with round-to-nearest-even, producing
// subnormals below 2^-14, ±0 below half the smallest subnormal, and ±Inf at or
// above 65520 (the midpoint between 65504 and 2^16). NaN stays NaN (quiet).
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // rebiased exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal result: value = m · 2^-24 with m = M >> (14-e), M the
		// 24-bit significand. Shifts of 25 or more leave less than half a unit.
		shift := uint32(14 - e)
		if shift > 24 {
			return sign
		}
		m24 := mant | 0x800000
		m := m24 >> shift
		rem := m24 & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && m&1 == 1) {
			m++ // may carry into the smallest normal: still the right bits
		}
		return sign | uint16(m)
	}
	m := mant >> 13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && m&1 == 1) {
		m++ // a carry into the exponent is correct, up to Inf (0x7c00)
	}
	return sign | uint16(uint32(e)<<10+m)
}
