package telecom

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/peertune/peertune/trainer/data"
)

// Task kinds (Example.Task, and the prefix of generated Example.IDs).
const (
	TaskSNR          = "snr"           // SNR = P_rx - N = -80 - (-100) = 20 dB
	TaskLinkBudget   = "link_budget"   // P_rx = P_tx + G_tx + G_rx - L = 30 + 15 + 3 - 120 = -72 dBm
	TaskEIRP         = "eirp"          // EIRP = P_tx + G_tx - L = 30 + 15 - 2 = 43 dBm
	TaskThermalNoise = "thermal_noise" // N = -174 + 10log10(B) + NF = -174 + 60 + 7 = -107 dBm
	TaskFSPL         = "fspl"          // FSPL = 20log10(2) + 20log10(900) + 32.44 = 97.5 dB
	TaskCapacity     = "capacity"      // C = B log2(1 + SNR) = 20 * log2(1 + 15) = 20 * 4 = 80 Mbit/s
	TaskDBWToDBm     = "dbw_to_dbm"    // P = 10 + 30 = 40 dBm
	TaskDBmToDBW     = "dbm_to_dbw"    // P = 40 - 30 = 10 dBW
	TaskDBmToMW      = "dbm_to_mw"     // P = 10^(20/10) mW = 100 mW
	TaskMWToDBm      = "mw_to_dbm"     // P = 10log10(100) dBm = 20 dBm
	TaskDBToLinear   = "db_to_linear"  // ratio = 10^(30/10) = 1000
	TaskLinearToDB   = "linear_to_db"  // G = 10log10(1000) = 30 dB
)

// problem is one drawn problem: its phrasings, its exact answer, and prose
// renderings of the same computation for the pretraining corpus (never in
// the answer format).
type problem struct {
	task    string
	prompts []string
	answer  string
	prose   []string
}

// taskSpec is one task kind.
type taskSpec struct {
	name   string
	weight int    // relative frequency in Generate
	format string // regexp of a well-formed answer
	draw   func(r *data.RNG) problem
}

// Tasks lists the task kinds, in a fixed order.
func Tasks() []string {
	var out []string
	for _, s := range specs() {
		out = append(out, s.name)
	}
	return out
}

// FormatPattern returns the regular expression that a well-formed answer of
// task matches, and false for an unknown task.
func FormatPattern(task string) (string, bool) {
	for _, s := range specs() {
		if s.name == task {
			return s.format, true
		}
	}
	return "", false
}

// between returns a uniform integer in [lo, hi].
func between(r *data.RNG, lo, hi int) int { return lo + r.IntN(hi-lo+1) }

func itoa(i int) string { return strconv.Itoa(i) }

// aboveBelow renders a level difference in words: "20 dB above", "3 dB below".
func aboveBelow(d int) string {
	if d < 0 {
		return itoa(-d) + " dB below"
	}
	return itoa(d) + " dB above"
}

// pow10 renders 10^k exactly as a plain decimal: 1000, 1, 0.001.
func pow10(k int) string {
	if k >= 0 {
		return "1" + strings.Repeat("0", k)
	}
	return "0." + strings.Repeat("0", -k-1) + "1"
}

// specs is the task table: the one place each task's phrasings, answer
// format and prose are defined.
func specs() []taskSpec {
	return []taskSpec{
		{TaskSNR, 50, `^SNR = P_rx - N = -?\d+ - \(-?\d+\) = -?\d+ dB$`, drawSNR},
		{TaskLinkBudget, 4, `^P_rx = P_tx \+ G_tx \+ G_rx - L = -?\d+ \+ \d+ \+ \d+ - \d+ = -?\d+ dBm$`, drawLinkBudget},
		{TaskEIRP, 8, `^EIRP = P_tx \+ G_tx - L = -?\d+ \+ \d+ - \d+ = -?\d+ dBm$`, drawEIRP},
		{TaskThermalNoise, 6, `^N = -174 \+ 10log10\(B\) \+ NF = -174 \+ \d+ \+ \d+ = -?\d+ dBm$`, drawThermal},
		{TaskFSPL, 2, `^FSPL = 20log10\(\d+(\.\d+)?\) \+ 20log10\(\d+\) \+ 32\.44 = \d+\.\d dB$`, drawFSPL},
		{TaskCapacity, 5, `^C = B log2\(1 \+ SNR\) = \d+ \* log2\(1 \+ \d+\) = \d+ \* \d+ = \d+ Mbit/s$`, drawCapacity},
		{TaskDBWToDBm, 12, `^P = -?\d+ \+ 30 = -?\d+ dBm$`, drawDBWToDBm},
		{TaskDBmToDBW, 12, `^P = -?\d+ - 30 = -?\d+ dBW$`, drawDBmToDBW},
		{TaskDBmToMW, 2, `^P = 10\^\(-?\d+/10\) mW = \d+(\.\d+)? mW$`, drawDBmToMW},
		{TaskMWToDBm, 2, `^P = 10log10\(\d+(\.\d+)?\) dBm = -?\d+ dBm$`, drawMWToDBm},
		{TaskDBToLinear, 1, `^ratio = 10\^\(-?\d+/10\) = \d+(\.\d+)?$`, drawDBToLinear},
		{TaskLinearToDB, 1, `^G = 10log10\(\d+(\.\d+)?\) = -?\d+ dB$`, drawLinearToDB},
	}
}

// SNR: the seed's example, exactly: received power and noise in dBm.
func drawSNR(r *data.RNG) problem {
	// Received powers are any whole dBm from -99 to -30; noise floors are
	// multiples of 5 dBm from -130 to -80 (as noise floors are usually
	// quoted): 770 problems, SNRs from -19 to 100 dB.
	p, n := between(r, -99, -30), -5*between(r, 16, 26)
	s := p - n
	return problem{
		task: TaskSNR,
		prompts: []string{
			fmt.Sprintf("Compute the SNR for received power %d dBm and noise %d dBm", p, n),
			fmt.Sprintf("What is the SNR for a received power of %d dBm and a noise power of %d dBm?", p, n),
			fmt.Sprintf("Find the signal-to-noise ratio when P_rx = %d dBm and N = %d dBm.", p, n),
		},
		answer: fmt.Sprintf("SNR = P_rx - N = %d - (%d) = %d dB", p, n, s),
		prose: []string{
			fmt.Sprintf("With a received power of %d dBm and noise of %d dBm, the signal is %s the noise: %d minus %d is %d.", p, n, aboveBelow(s), p, n, s),
			fmt.Sprintf("A receiver measures a signal of %d dBm over a noise floor of %d dBm. In decibels the signal-to-noise ratio is the difference of the two levels: %d minus %d is %d, so the SNR is %d dB.", p, n, p, n, s, s),
			fmt.Sprintf("Subtracting a negative number adds its size: %d - (%d) is the same as %d + %d, which is %d. So a signal at %d dBm over noise at %d dBm has an SNR of %d dB.", p, n, p, -n, s, p, n, s),
			fmt.Sprintf("Here P_rx is %d dBm and N is %d dBm. The SNR is P_rx minus N, and %d - (%d) is %d, so it is %d dB.", p, n, p, n, s, s),
		},
	}
}

func drawLinkBudget(r *data.RNG) problem {
	pt, gt, gr, l := between(r, 0, 40), between(r, 0, 20), between(r, 0, 10), between(r, 80, 140)
	g := pt + gt + gr
	prx := g - l
	return problem{
		task: TaskLinkBudget,
		prompts: []string{
			fmt.Sprintf("Compute the received power for P_tx = %d dBm, G_tx = %d dBi, G_rx = %d dBi and path loss L = %d dB", pt, gt, gr, l),
			fmt.Sprintf("A transmitter sends %d dBm through an antenna with %d dBi of gain to a receive antenna with %d dBi of gain over a path loss of %d dB. What is the received power?", pt, gt, gr, l),
			fmt.Sprintf("Find the received power given a transmit power of %d dBm, antenna gains of %d dBi and %d dBi, and a path loss of %d dB.", pt, gt, gr, l),
		},
		answer: fmt.Sprintf("P_rx = P_tx + G_tx + G_rx - L = %d + %d + %d - %d = %d dBm", pt, gt, gr, l, prx),
		prose: []string{
			fmt.Sprintf("Starting from %d dBm at the transmitter, add a transmit antenna gain of %d dBi and a receive antenna gain of %d dBi, then take away %d dB of path loss: %d plus %d plus %d minus %d leaves %d dBm at the receiver.", pt, gt, gr, l, pt, gt, gr, l, prx),
			fmt.Sprintf("A link budget adds the gains and subtracts the losses, all in decibels. Here %d and %d and %d make %d, and %d minus %d is %d, so the received power is %d dBm.", pt, gt, gr, g, g, l, prx, prx),
			fmt.Sprintf("P_tx is %d dBm, G_tx is %d dBi, G_rx is %d dBi and L is %d dB, so %d + %d + %d - %d is %d and the received power is %d dBm.", pt, gt, gr, l, pt, gt, gr, l, prx, prx),
		},
	}
}

func drawEIRP(r *data.RNG) problem {
	pt, g, l := between(r, 10, 40), between(r, 0, 20), between(r, 1, 3)
	e := pt + g - l
	return problem{
		task: TaskEIRP,
		prompts: []string{
			fmt.Sprintf("Compute the EIRP for transmit power %d dBm, antenna gain %d dBi and cable loss %d dB", pt, g, l),
			fmt.Sprintf("What is the EIRP of a transmitter with %d dBm of output power, an antenna gain of %d dBi and %d dB of feeder loss?", pt, g, l),
		},
		answer: fmt.Sprintf("EIRP = P_tx + G_tx - L = %d + %d - %d = %d dBm", pt, g, l, e),
		prose: []string{
			fmt.Sprintf("A transmitter of %d dBm feeding an antenna of %d dBi through a cable that loses %d dB radiates an effective isotropic power of %d dBm, since %d plus %d minus %d is %d.", pt, g, l, e, pt, g, l, e),
			fmt.Sprintf("The equivalent isotropically radiated power adds the antenna gain to the transmit power and removes the cable loss: %d dBm with %d dBi of gain and %d dB of loss gives %d dBm, because %d + %d - %d is %d.", pt, g, l, e, pt, g, l, e),
		},
	}
}

// bandwidth is a bandwidth of the thermal noise task: its name, its value in
// hertz and ten times its log10.
type bandwidth struct {
	name string
	hz   string
	db   int
}

func bandwidths() []bandwidth {
	return []bandwidth{
		{"1 kHz", "1000", 30}, {"10 kHz", "10000", 40}, {"100 kHz", "100000", 50},
		{"1 MHz", "1000000", 60}, {"10 MHz", "10000000", 70}, {"100 MHz", "100000000", 80},
		{"1 GHz", "1000000000", 90},
	}
}

func drawThermal(r *data.RNG) problem {
	bws := bandwidths()
	b := bws[r.IntN(len(bws))]
	nf := between(r, 0, 15)
	n := -174 + b.db + nf
	return problem{
		task: TaskThermalNoise,
		prompts: []string{
			fmt.Sprintf("Compute the thermal noise power for a bandwidth of %s and a noise figure of %d dB", b.name, nf),
			fmt.Sprintf("What is the noise floor of a receiver with %s of bandwidth and a noise figure of %d dB?", b.name, nf),
		},
		answer: fmt.Sprintf("N = -174 + 10log10(B) + NF = -174 + %d + %d = %d dBm", b.db, nf, n),
		prose: []string{
			fmt.Sprintf("Thermal noise at room temperature is -174 dBm in every hertz of bandwidth. A bandwidth of %s is %s Hz, and ten times log10 of %s is %d, so the noise in %s is %d dBm; a noise figure of %d dB raises the floor to %d dBm.", b.name, b.hz, b.hz, b.db, b.name, -174+b.db, nf, n),
			fmt.Sprintf("A receiver with %s of bandwidth and a noise figure of %d dB has a noise floor of %d dBm: -174 plus %d plus %d.", b.name, nf, n, b.db, nf),
		},
	}
}

func drawFSPL(r *data.RNG) problem {
	ds := []float64{0.1, 0.2, 0.5}
	for d := 1; d <= 50; d++ {
		ds = append(ds, float64(d))
	}
	fs := []int{700, 800, 900, 1800, 1900, 2100, 2400, 2600, 3500, 5800}
	d, f := ds[r.IntN(len(ds))], fs[r.IntN(len(fs))]
	v := FSPL(d, float64(f))
	dstr := strconv.FormatFloat(d, 'f', -1, 64)
	return problem{
		task: TaskFSPL,
		prompts: []string{
			fmt.Sprintf("Compute the free-space path loss at a distance of %s km and a frequency of %d MHz", dstr, f),
			fmt.Sprintf("What is the free-space path loss over %s km at %d MHz?", dstr, f),
		},
		answer: fmt.Sprintf("FSPL = 20log10(%s) + 20log10(%d) + 32.44 = %.1f dB", dstr, f, v),
		prose: []string{
			fmt.Sprintf("Free-space path loss grows by 20 dB for every tenfold increase in distance or in frequency. With the distance in kilometres and the frequency in megahertz the constant is 32.44 dB, so %s km at %d MHz loses about %.1f dB.", dstr, f, v),
			fmt.Sprintf("Twenty times log10 of %s is %.2f and twenty times log10 of %d is %.2f; adding 32.44 gives a free-space loss of about %.1f dB over %s km at %d MHz.", dstr, 20*math.Log10(d), f, 20*math.Log10(float64(f)), v, dstr, f),
		},
	}
}

// FSPL is the free-space path loss in dB for a distance in km and a
// frequency in MHz, rounded to one decimal:
// 20log10(d) + 20log10(f) + 32.44.
func FSPL(dKm, fMHz float64) float64 {
	return math.Round((20*math.Log10(dKm)+20*math.Log10(fMHz)+32.44)*10) / 10
}

func drawCapacity(r *data.RNG) problem {
	k, b := between(r, 1, 8), between(r, 1, 30)
	s := 1<<k - 1
	c := b * k
	return problem{
		task: TaskCapacity,
		prompts: []string{
			fmt.Sprintf("Compute the Shannon capacity of a channel of %d MHz with a linear SNR of %d", b, s),
			fmt.Sprintf("What is the channel capacity for a bandwidth of %d MHz and a linear SNR of %d?", b, s),
		},
		answer: fmt.Sprintf("C = B log2(1 + SNR) = %d * log2(1 + %d) = %d * %d = %d Mbit/s", b, s, b, k, c),
		prose: []string{
			fmt.Sprintf("By Shannon's formula a channel of %d MHz at a linear SNR of %d carries at most %d times log2 of %d; log2 of %d is %d, and %d times %d is %d, so the capacity is %d Mbit/s.", b, s, b, s+1, s+1, k, b, k, c, c),
			fmt.Sprintf("One plus an SNR of %d is %d, which is 2 to the power %d. Over %d MHz that allows %d * %d, which is %d Mbit/s without errors.", s, s+1, k, b, b, k, c),
		},
	}
}

func drawDBWToDBm(r *data.RNG) problem {
	x := between(r, -70, 70)
	return problem{
		task: TaskDBWToDBm,
		prompts: []string{
			fmt.Sprintf("Convert %d dBW to dBm", x),
			fmt.Sprintf("Express a power of %d dBW in dBm.", x),
		},
		answer: fmt.Sprintf("P = %d + 30 = %d dBm", x, x+30),
		prose: []string{
			fmt.Sprintf("%d dBW is the same power as %d dBm, because one watt is 30 dB above one milliwatt.", x, x+30),
			fmt.Sprintf("To turn %d dBW into dBm, add 30: %d plus 30 is %d, so the power is %d dBm.", x, x, x+30, x+30),
		},
	}
}

func drawDBmToDBW(r *data.RNG) problem {
	x := between(r, -40, 90)
	return problem{
		task: TaskDBmToDBW,
		prompts: []string{
			fmt.Sprintf("Convert %d dBm to dBW", x),
			fmt.Sprintf("Express a power of %d dBm in dBW.", x),
		},
		answer: fmt.Sprintf("P = %d - 30 = %d dBW", x, x-30),
		prose: []string{
			fmt.Sprintf("A power of %d dBm is %d dBW: a milliwatt is 30 dB below a watt.", x, x-30),
			fmt.Sprintf("To turn %d dBm into dBW, take away 30: %d - 30 is %d, so the power is %d dBW.", x, x, x-30, x-30),
		},
	}
}

func drawDBmToMW(r *data.RNG) problem {
	k := between(r, -9, 6)
	x := 10 * k
	return problem{
		task: TaskDBmToMW,
		prompts: []string{
			fmt.Sprintf("Convert %d dBm to mW", x),
			fmt.Sprintf("How many milliwatts is %d dBm?", x),
		},
		answer: fmt.Sprintf("P = 10^(%d/10) mW = %s mW", x, pow10(k)),
		prose: []string{
			fmt.Sprintf("%d dBm is %s mW, since every 10 dB is a factor of ten.", x, pow10(k)),
		},
	}
}

func drawMWToDBm(r *data.RNG) problem {
	k := between(r, -9, 6)
	return problem{
		task: TaskMWToDBm,
		prompts: []string{
			fmt.Sprintf("Convert %s mW to dBm", pow10(k)),
			fmt.Sprintf("Express a power of %s mW in dBm.", pow10(k)),
		},
		answer: fmt.Sprintf("P = 10log10(%s) dBm = %d dBm", pow10(k), 10*k),
		prose: []string{
			fmt.Sprintf("A power of %s mW is %d dBm: ten times log10 of %s is %d.", pow10(k), 10*k, pow10(k), 10*k),
		},
	}
}

func drawDBToLinear(r *data.RNG) problem {
	k := between(r, -6, 9)
	x := 10 * k
	return problem{
		task: TaskDBToLinear,
		prompts: []string{
			fmt.Sprintf("Convert %d dB to a linear power ratio", x),
			fmt.Sprintf("What linear power ratio is %d dB?", x),
		},
		answer: fmt.Sprintf("ratio = 10^(%d/10) = %s", x, pow10(k)),
		prose: []string{
			fmt.Sprintf("A gain of %d dB multiplies the power by %s.", x, pow10(k)),
		},
	}
}

func drawLinearToDB(r *data.RNG) problem {
	k := between(r, -6, 9)
	return problem{
		task: TaskLinearToDB,
		prompts: []string{
			fmt.Sprintf("Express a power ratio of %s in dB", pow10(k)),
			fmt.Sprintf("How many decibels is a power ratio of %s?", pow10(k)),
		},
		answer: fmt.Sprintf("G = 10log10(%s) = %d dB", pow10(k), 10*k),
		prose: []string{
			fmt.Sprintf("A power ratio of %s is %d dB.", pow10(k), 10*k),
		},
	}
}
