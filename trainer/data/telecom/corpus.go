package telecom

import (
	"fmt"
	"strings"

	"github.com/peertune/peertune/trainer/data"
)

// Corpus returns the pretraining corpus of the tiny base model: plain English
// prose about the pieces of the telecom domain, deterministic in seed, at
// least nBytes long (it ends at a paragraph boundary).
//
// The point (the seed's "fine-tuning mainly teaches the task format and
// domain conventions"): a model pretrained on it knows the pieces, and has
// never seen the instruction template ("### Instruction:") nor the answer
// format ("SNR = P_rx - N = ..."): the corpus contains no '=' and no '#' at
// all. Fine-tuning then teaches the format and its conventions. The pieces:
//
//   - definitions and unit facts (dBm, dBW, dBi, mW, log10, log2);
//   - restating quantities: a few numbers, then the same numbers again, in
//     order and by name ("So P_rx is -80 dBm and N is -100 dBm"). Every
//     task's answer restates its inputs in order, and a small model learns
//     to copy numbers from its context only when the text rewards it;
//   - arithmetic drills on the domain's numbers, in words and symbols but
//     never with '=' ("-80 minus -100 is 20.", "-80 - (-100) is 20.",
//     "17 plus 30 is 47."): what a pretrained model knows of arithmetic;
//   - worked computations told as prose ("With a received power of -80 dBm
//     and noise of -100 dBm, the signal is 20 dB above the noise").
//
// Worked computations use only problems reserved for the corpus, which
// Generate never emits, so no train or evaluation problem is worked in the
// corpus. The drills are arithmetic over the ranges the tasks use (the
// difference of every received power and noise floor, every level plus or
// minus 30, ...): knowing that -80 minus -100 is 20 is knowing arithmetic,
// as a pretrained model does; putting it in the answer format with the
// right inputs is what fine-tuning has to teach.
//
// DefaultCorpusBytes (4 MB) is enough that the recipe's 20M tokens see each
// paragraph about five times.
func Corpus(seed uint64, nBytes int) string {
	text, _ := corpus(seed, nBytes)
	return text
}

// corpus also returns the problems it worked through (for tests).
func corpus(seed uint64, nBytes int) (string, []problem) {
	r := data.NewRNG(seed ^ 0xC0B5)
	sp := specs()
	total := 0
	for _, s := range sp {
		total += s.weight
	}
	defs := definitions()
	var b strings.Builder
	var worked []problem
	for b.Len() < nBytes {
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		var sents []string
		switch x := r.IntN(100); {
		case x < 5:
			sents = append(sents, defs[r.IntN(len(defs))])
		case x < 10:
			for range between(r, 3, 5) {
				sents = append(sents, fact(r))
			}
		case x < 40:
			for range between(r, 1, 3) {
				sents = append(sents, restate(r))
			}
		case x < 75:
			for range between(r, 6, 10) {
				sents = append(sents, arithmetic(r))
			}
		default:
			for range between(r, 1, 2) {
				p := reservedProblem(sp, total, r)
				worked = append(worked, p)
				sents = append(sents, p.prose[r.IntN(len(p.prose))])
			}
		}
		b.WriteString(strings.Join(sents, " "))
	}
	b.WriteString("\n")
	return b.String(), worked
}

// reservedProblem draws problems until one is reserved for the corpus
// (about one in corpusShare draws).
func reservedProblem(sp []taskSpec, total int, r *data.RNG) problem {
	for {
		if p := pickSpec(sp, total, r).draw(r); reserved(p) {
			return p
		}
	}
}

// fact states one numeric fact of the domain.
func fact(r *data.RNG) string {
	switch r.IntN(6) {
	case 5:
		bws := bandwidths()
		b := bws[r.IntN(len(bws))]
		return fmt.Sprintf("A bandwidth of %s is %s Hz, and ten times the log10 of %s is %d.", b.name, b.hz, b.hz, b.db)
	case 0:
		k := between(r, 0, 9)
		return fmt.Sprintf("The base-ten logarithm of %s is %d, so ten times it is %d and twenty times it is %d.", pow10(k), k, 10*k, 20*k)
	case 1:
		k := between(r, 1, 10)
		return fmt.Sprintf("2 to the power %d is %d, so log2 of %d is %d.", k, 1<<k, 1<<k, k)
	case 2:
		k := between(r, -9, 6)
		return fmt.Sprintf("A power of %d dBm is %s mW.", 10*k, pow10(k))
	case 3:
		k := between(r, -6, 9)
		return fmt.Sprintf("%d dB is a power ratio of %s.", 10*k, pow10(k))
	default:
		x := between(r, -40, 50)
		return fmt.Sprintf("%d dBW and %d dBm are the same power.", x, x+30)
	}
}

// arithmetic states one sum, difference or product in words or symbols,
// never with '=' (the answer format's sign). Most drills are the tasks'
// own arithmetic, over the tasks' ranges.
func arithmetic(r *data.RNG) string {
	switch x := r.IntN(100); {
	case x < 55: // SNR: a received power minus a noise floor
		a, c := between(r, -99, -30), -5*between(r, 16, 26)
		switch r.IntN(5) {
		case 0, 1:
			return fmt.Sprintf("%d minus %d is %d.", a, c, a-c)
		case 2, 3:
			return fmt.Sprintf("%d - (%d) is %d.", a, c, a-c)
		default:
			return fmt.Sprintf("%d plus %d is %d.", a, -c, a-c)
		}
	case x < 72: // dBW and dBm: plus or minus 30
		v := between(r, -70, 90)
		switch r.IntN(4) {
		case 0:
			return fmt.Sprintf("%d plus 30 is %d.", v, v+30)
		case 1:
			return fmt.Sprintf("%d + 30 is %d.", v, v+30)
		case 2:
			return fmt.Sprintf("%d minus 30 is %d.", v, v-30)
		default:
			return fmt.Sprintf("%d - 30 is %d.", v, v-30)
		}
	case x < 80: // thermal noise: -174 plus 10log10(B) plus the noise figure
		b, nf := 10*between(r, 3, 9), between(r, 0, 15)
		if r.IntN(3) == 0 {
			return fmt.Sprintf("-174 plus %d is %d.", b, b-174)
		}
		return fmt.Sprintf("-174 + %d + %d is %d.", b, nf, b-174+nf)
	case x < 87: // capacity: bandwidth times bits per hertz
		b, k := between(r, 1, 30), between(r, 1, 8)
		if r.IntN(2) == 0 {
			return fmt.Sprintf("%d times %d is %d.", b, k, b*k)
		}
		return fmt.Sprintf("%d * %d is %d.", b, k, b*k)
	case x < 95: // EIRP: transmit power plus gain minus a small loss
		a, g, l := between(r, 10, 40), between(r, 0, 20), between(r, 1, 3)
		if r.IntN(2) == 0 {
			return fmt.Sprintf("%d plus %d is %d.", a, g, a+g)
		}
		return fmt.Sprintf("%d + %d - %d is %d.", a, g, l, a+g-l)
	default: // link budget: gains, then the path loss
		a, c, d, l := between(r, 0, 40), between(r, 0, 20), between(r, 0, 10), between(r, 80, 140)
		if r.IntN(2) == 0 {
			return fmt.Sprintf("%d plus %d plus %d is %d.", a, c, d, a+c+d)
		}
		g := between(r, 0, 70)
		return fmt.Sprintf("%d minus %d is %d.", g, l, g-l)
	}
}

// restate introduces a few quantities and restates them, in order and by
// name: every task's answer restates its inputs in order.
func restate(r *data.RNG) string {
	switch r.IntN(8) {
	case 0, 1: // a list of levels, then the same list
		k := between(r, 2, 4)
		vs := make([]string, k)
		for i := range vs {
			vs[i] = itoa(between(r, -130, 60))
		}
		list := strings.Join(vs[:k-1], ", ") + " and " + vs[k-1]
		switch r.IntN(3) {
		case 0:
			return fmt.Sprintf("The levels read %s dB. In order, they are %s.", list, strings.Join(vs, ", "))
		case 1:
			return fmt.Sprintf("We measured %s dBm, that is %s.", list, strings.Join(vs, ", then "))
		default:
			return fmt.Sprintf("Write down %s: %s.", list, strings.Join(vs, ", "))
		}
	case 2, 3: // a received power and a noise floor
		p, n := between(r, -99, -30), between(r, -130, -80)
		switch r.IntN(3) {
		case 0:
			return fmt.Sprintf("A receiver sees a signal of %d dBm and noise of %d dBm. So P_rx is %d dBm and N is %d dBm, and the two levels are %d and %d.", p, n, p, n, p, n)
		case 1:
			return fmt.Sprintf("The received power is %d dBm and the noise power is %d dBm: P_rx is %d and N is %d.", p, n, p, n)
		default:
			return fmt.Sprintf("With P_rx at %d dBm and N at %d dBm, the signal level is %d dBm and the noise level is %d dBm.", p, n, p, n)
		}
	case 4: // a link
		pt, gt, gr, l := between(r, 0, 40), between(r, 0, 20), between(r, 0, 10), between(r, 80, 140)
		return fmt.Sprintf("A link sends %d dBm through antennas of %d dBi and %d dBi over %d dB of path loss. So P_tx is %d, G_tx is %d, G_rx is %d and L is %d.", pt, gt, gr, l, pt, gt, gr, l)
	case 5: // a transmitter
		pt, g, l := between(r, 10, 40), between(r, 0, 20), between(r, 1, 3)
		return fmt.Sprintf("A transmitter of %d dBm feeds an antenna of %d dBi through a cable that loses %d dB. Its P_tx is %d dBm, its G_tx is %d dBi and its L is %d dB.", pt, g, l, pt, g, l)
	case 6: // a channel
		b, k := between(r, 1, 30), between(r, 1, 8)
		return fmt.Sprintf("A channel of %d MHz has a linear SNR of %d. Its bandwidth B is %d MHz and its SNR is %d.", b, 1<<k-1, b, 1<<k-1)
	default: // one level
		v := between(r, -70, 90)
		if r.IntN(2) == 0 {
			return fmt.Sprintf("A transmitter puts out %d dBW. Its power P is %d dBW.", v, v)
		}
		return fmt.Sprintf("A signal arrives at %d dBm. Its power P is %d dBm.", v, v)
	}
}

// definitions are the domain's definitions, in prose.
func definitions() []string {
	return []string{
		"The signal-to-noise ratio, or SNR, compares the power of a signal with the power of the noise that comes with it. When both powers are given in dBm, the SNR in decibels is the received power minus the noise power.",
		"A decibel expresses a power ratio on a logarithmic scale: ten times the base-ten logarithm of the ratio. A factor of ten is 10 dB, a factor of one hundred is 20 dB, and a factor of two is about 3 dB.",
		"dBm measures power relative to one milliwatt. 0 dBm is 1 mW, 10 dBm is 10 mW, 30 dBm is one watt, and -30 dBm is one microwatt.",
		"dBW measures power relative to one watt. A level in dBW is 30 less than the same level in dBm, because one watt is a thousand milliwatts.",
		"dBi measures the gain of an antenna relative to an ideal isotropic antenna that radiates equally in every direction.",
		"The received power, written P_rx, is what reaches the receiver. In decibels it is the transmit power P_tx plus the antenna gains G_tx and G_rx minus the path loss L.",
		"Thermal noise comes from the random motion of electrons. At room temperature its density is -174 dBm per hertz, so the noise power rises by 10 dB for every tenfold increase in bandwidth.",
		"The noise figure, NF, of a receiver says how many decibels of noise the receiver adds on top of thermal noise. The noise floor is the thermal noise plus the noise figure.",
		"Free-space path loss, FSPL, is the loss between two antennas in empty space. It grows with the square of the distance and with the square of the frequency, which is 20 dB per decade of each, plus 32.44 dB when the distance is in kilometres and the frequency in megahertz.",
		"Shannon's capacity is the highest bit rate a channel can carry without errors: the bandwidth times log2 of one plus the SNR, with the SNR as a linear ratio, not in dB.",
		"EIRP, the effective isotropic radiated power, is the transmit power plus the antenna gain minus the losses in the cable that feeds the antenna.",
		"A link budget accounts for every gain and loss between a transmitter and a receiver. Because decibels are logarithms, the gains are added and the losses subtracted.",
		"Bandwidth is measured in hertz: one kilohertz is 1000 Hz, one megahertz is 1000000 Hz and one gigahertz is 1000000000 Hz.",
		"Logarithms turn multiplication into addition, which is why engineers add decibels where they would otherwise multiply ratios.",
		"A negative level in dBm is a power below one milliwatt. Received signals are often between -50 dBm and -120 dBm, and noise floors near -100 dBm.",
		"Subtracting a negative number is the same as adding its size: five minus negative three is eight, and a signal 20 dB above a noise floor of -100 dBm is at -80 dBm.",
		"The capacity of a channel grows in proportion to its bandwidth but only with the logarithm of its SNR.",
		"A receiver can decode a signal only when the SNR is high enough for its modulation; a negative SNR means the signal is weaker than the noise.",
	}
}
