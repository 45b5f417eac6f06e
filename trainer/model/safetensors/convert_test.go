package safetensors

import (
	"math"
	"testing"
)

// Every F16 bit pattern widens and narrows back to itself (NaNs stay NaN).
func TestF16RoundTripAllPatterns(t *testing.T) {
	for h := range 1 << 16 {
		f := f16ToF32(uint16(h))
		got := f32ToF16(f)
		if math.IsNaN(float64(f)) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
	}
}

// f16ToF32 against the definition: (-1)^s · 2^(e-15) · 1.m, or m · 2^-24.
func TestF16Widen(t *testing.T) {
	for h := range 0x7c00 { // positive finite
		e, m := h>>10, h&0x3ff
		var want float64
		if e == 0 {
			want = math.Ldexp(float64(m), -24)
		} else {
			want = math.Ldexp(1+float64(m)/1024, e-15)
		}
		if got := f16ToF32(uint16(h)); float64(got) != want {
			t.Fatalf("%#04x: got %g want %g", h, got, want)
		}
		if got := f16ToF32(uint16(h) | 0x8000); float64(got) != -want {
			t.Fatalf("-%#04x: got %g want %g", h, got, -want)
		}
	}
}

// roundingCheck verifies round-to-nearest-even exhaustively: for every pair
// of neighbouring positive finite values a < b of the narrow format, the
// midpoint goes to the one with an even pattern, and the float32 values
// just below and above it go to a and b.
func roundingCheck(t *testing.T, name string, maxFinite, inf uint16, widen func(uint16) float32, narrow func(float32) uint16) {
	t.Helper()
	for h := uint16(0); h <= maxFinite; h++ {
		next := h + 1 // maxFinite+1 is Inf: overflow rounds like any other step
		a := float64(widen(h))
		var b float64
		if next == inf {
			// The value one step above the largest finite, as if the
			// exponent range went on.
			b = a + (a - float64(widen(h-1)))
		} else {
			b = float64(widen(next))
		}
		mid := float32((a + b) / 2) // exact: one more bit than the narrow format
		if float64(mid) != (a+b)/2 {
			t.Fatalf("%s: midpoint of %#04x not exact in float32", name, h)
		}
		even := h
		if h&1 == 1 {
			even = next
		}
		below := math.Nextafter32(mid, 0)
		above := math.Nextafter32(mid, float32(math.Inf(1)))
		for _, c := range []struct {
			in   float32
			want uint16
		}{{mid, even}, {below, h}, {above, next}, {-mid, even | 0x8000}, {-above, next | 0x8000}} {
			if got := narrow(c.in); got != c.want {
				t.Fatalf("%s(%g) = %#04x, want %#04x (between %#04x and %#04x)", name, c.in, got, c.want, h, next)
			}
		}
	}
}

func TestF16RoundNearestEven(t *testing.T) {
	roundingCheck(t, "f16", 0x7bff, 0x7c00, f16ToF32, f32ToF16)
	for _, c := range []struct {
		in   float32
		want uint16
	}{
		{float32(math.Inf(1)), 0x7c00}, {float32(math.Inf(-1)), 0xfc00},
		{1e10, 0x7c00}, {-1e10, 0xfc00}, {65519, 0x7bff}, {65520, 0x7c00},
		{math.Float32frombits(1), 0}, {float32(math.Copysign(0, -1)), 0x8000},
		{float32(math.Ldexp(1, -25)), 0},                          // tie with 0 -> 0
		{float32(math.Ldexp(1, -25) * 1.0000001), 1},              // just above
		{float32(math.Ldexp(3, -25)), 2},                          // tie -> even
		{float32(math.Ldexp(1, -14) - math.Ldexp(1, -25)), 0x400}, // rounds up into the normals
	} {
		if got := f32ToF16(c.in); got != c.want {
			t.Errorf("f32ToF16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := f32ToF16(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("NaN -> %#04x", got)
	}
}

func TestBF16RoundNearestEven(t *testing.T) {
	roundingCheck(t, "bf16", 0x7f7f, 0x7f80, bf16ToF32, f32ToBF16)
	for h := range 0x7f80 { // every finite pattern round-trips
		if got := f32ToBF16(bf16ToF32(uint16(h))); got != uint16(h) {
			t.Fatalf("%#04x round-tripped to %#04x", h, got)
		}
	}
	for _, bits := range []uint32{0x7f800001, 0x7fc00000, 0xff800001, 0x7fffffff} {
		nan := math.Float32frombits(bits)
		got := f32ToBF16(nan)
		if !math.IsNaN(float64(bf16ToF32(got))) || got>>15 != uint16(bits>>31) {
			t.Errorf("NaN %#08x -> %#04x", bits, got)
		}
	}
	if got := f32ToBF16(float32(math.Inf(-1))); got != 0xff80 {
		t.Errorf("-Inf -> %#04x", got)
	}
}
