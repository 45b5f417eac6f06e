package vmath

import "math"

// Constants of the Cephes expf algorithm: e^x = 2^n · e^r with
// n = round(x·log2 e), r = x − n·ln 2 (ln 2 split in two for exactness),
// e^r ≈ 1 + r + r²·P(r) on |r| <= ln2/2.
const (
	expLog2e = 1.44269504088896341
	expLn2Hi = 0.693359375
	expLn2Lo = -2.12194440e-4
	// Adding 1.5·2²³ to a float32 of magnitude < 2²² rounds it to an integer
	// (round-half-even); subtracting it back gives that integer as a float.
	expRoundMagic = 12582912.0
	// Below this, e^x is subnormal in float32; returning 0 loses < 1.2e-38.
	expUnderflow = -87.33654
	// Above this, 2^n would reach the exponent 128 (Inf): Exp takes the
	// float64 path there, the slice functions clamp.
	expFastMax = 88.0
)

// Exp returns e^x in float32, within about 1 ulp of the exact value
// (math.Exp's float64 path costs twice as much and its extra precision is
// lost in the conversion back).
func Exp(x float32) float32 {
	if !(x <= expFastMax) { // also NaN
		return expSlow(x)
	}
	if x < expUnderflow {
		return 0
	}
	kf := (x*expLog2e + expRoundMagic) - expRoundMagic
	r := x - kf*expLn2Hi - kf*expLn2Lo
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(int32(kf)+127)<<23)
}

// expSlow is Exp's rare path (x > 88, +Inf, NaN), kept out of line.
//
//go:noinline
func expSlow(x float32) float32 { return float32(math.Exp(float64(x))) }

// ExpShiftSum writes dst[i] = e^(src[i]−shift) and returns Σ dst[i]
// accumulated in float64: a softmax row's exponentials and their sum, with
// shift = max(src) so that every exponent is <= 0. dst may alias src.
// Exponents above 88 (never reached with shift = max) are clamped to 88,
// where e^x nears float32's limit. NaN propagates.
func ExpShiftSum(dst, src []float32, shift float32) float64 {
	return expCore(dst, src, 1, shift)
}

// ExpNeg writes dst[i] = e^(−src[i]) (the denominator of a sigmoid), with
// −src[i] clamped to 88 as in ExpShiftSum. dst may alias src.
func ExpNeg(dst, src []float32) {
	expCore(dst, src, -1, 0)
}

// expCoreGo writes dst[i] = e^min(src[i]·scale−shift, 88) (0 below
// expUnderflow) and returns Σ dst[i] in float64: Exp unrolled into the loop
// (Exp is too large for Go to inline, and the call would cost as much as the
// math), the reference for and tail of the assembly loop.
func expCoreGo(dst, src []float32, scale, shift float32) float64 {
	dst = dst[:len(src)]
	var sum float64
	for i, v := range src {
		x := min(v*scale-shift, expFastMax)
		var e float32
		if x < expUnderflow {
			e = 0
		} else {
			kf := (x*expLog2e + expRoundMagic) - expRoundMagic
			r := x - kf*expLn2Hi - kf*expLn2Lo
			p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
			p = p*r*r + r + 1
			e = p * math.Float32frombits(uint32(int32(kf)+127)<<23)
		}
		dst[i] = e
		sum += float64(e)
	}
	return sum
}

// maxGo returns the largest of m and the elements of x, NaN if any is NaN.
// It compares with > rather than the max builtin, whose NaN and ±0 rules
// cost several times more per element.
func maxGo(x []float32, m float32) float32 {
	for _, v := range x {
		if v > m {
			m = v
		} else if v != v {
			return v
		}
	}
	return m
}
