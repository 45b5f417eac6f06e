package gpu

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Budget is a parsed --mem-budget: a share of the device's memory
// ("90%") or an absolute size ("20GiB"). Exactly one of Percent and Bytes
// is set.
type Budget struct {
	Percent float64 // (0, 100]
	Bytes   uint64
}

// unit multipliers. Decimal (kB, MB, GB, TB and the bare K, M, G, T as
// Kubernetes reads them) and binary (KiB..TiB, Ki..Ti).
var budgetUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20,
	"gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}

// ParseBudget reads "90%", "20GiB", "512MiB", "1.5TB" or a plain byte
// count. Units are case-insensitive; GB/TB are decimal (1e9, 1e12) and
// GiB/TiB binary.
func ParseBudget(s string) (Budget, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return Budget{}, fmt.Errorf("memory budget is empty: want a percentage of the device (90%%) or a size (20GiB, 512MiB, 1.5TB)")
	}
	if p, ok := strings.CutSuffix(in, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) {
			return Budget{}, fmt.Errorf("memory budget %q: %q is not a number", s, p)
		}
		if v <= 0 || v > 100 {
			return Budget{}, fmt.Errorf("memory budget %q: a percentage must be in (0, 100]", s)
		}
		return Budget{Percent: v}, nil
	}
	i := len(in)
	for i > 0 && (in[i-1] >= 'a' && in[i-1] <= 'z' || in[i-1] >= 'A' && in[i-1] <= 'Z') {
		i--
	}
	num, unit := strings.TrimSpace(in[:i]), strings.ToLower(in[i:])
	mult, ok := budgetUnits[unit]
	if !ok {
		return Budget{}, fmt.Errorf("memory budget %q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, or a %%)", s, in[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return Budget{}, fmt.Errorf("memory budget %q: %q is not a number", s, num)
	}
	if v <= 0 {
		return Budget{}, fmt.Errorf("memory budget %q: must be positive", s)
	}
	b := v * mult
	if b >= math.MaxUint64/2 {
		return Budget{}, fmt.Errorf("memory budget %q: too large", s)
	}
	if b < 1 {
		return Budget{}, fmt.Errorf("memory budget %q: less than one byte", s)
	}
	return Budget{Bytes: uint64(b)}, nil
}

// String renders the budget as ParseBudget reads it.
func (b Budget) String() string {
	if b.Percent > 0 {
		return strconv.FormatFloat(b.Percent, 'g', -1, 64) + "%"
	}
	// The shortest exact form: a whole or short decimal number of a binary
	// or decimal unit that parses back to the same byte count.
	for _, u := range []struct {
		name string
		mult float64
	}{{"TiB", 1 << 40}, {"TB", 1e12}, {"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		v := float64(b.Bytes) / u.mult
		if v < 1 {
			continue
		}
		txt := strconv.FormatFloat(v, 'f', -1, 64)
		if len(txt) <= 6 && uint64(v*u.mult) == b.Bytes {
			return txt + u.name
		}
	}
	return strconv.FormatUint(b.Bytes, 10)
}

// Resolve turns the budget into bytes of a device (or host) with total
// bytes of memory. An absolute budget larger than the memory there is an
// error: the budget would not protect anything.
func (b Budget) Resolve(total uint64) (uint64, error) {
	if b.Percent > 0 {
		return uint64(float64(total) * b.Percent / 100), nil
	}
	if b.Bytes == 0 {
		return 0, fmt.Errorf("memory budget is not set")
	}
	if total > 0 && b.Bytes > total {
		return 0, fmt.Errorf("memory budget %s is more than the %s there is", FormatBytes(b.Bytes), FormatBytes(total))
	}
	return b.Bytes, nil
}

// FormatBytes prints n with a binary unit and up to one decimal: "1.5 GiB".
func FormatBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[i:i+1] + "iB"
}
