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
// domain conventions"): a model pretrained on it knows the pieces --
// definitions, units, dBm and log facts, arithmetic with negative numbers in
// words, and worked computations told as prose ("With a received power of
// -80 dBm and noise of -100 dBm, the signal is 20 dB above the noise.") --
// but has never seen the instruction template ("### Instruction:") nor the
// answer format ("SNR = P_rx - N = ..."): the corpus contains no '=' and no
// '#' at all. Fine-tuning then teaches the format and conventions.
//
// Worked computations use only problems reserved for the corpus, which
// Generate never emits, so no train or evaluation problem is worked in the
// corpus. Facts (log10 of powers of ten, dBm of powers of ten milliwatts) are
// domain knowledge and are stated as such.
//
// 300 KB (DefaultCorpusBytes) is plenty for a 1-2M-parameter byte-level
// model pretrained for a few minutes on 2 CPU cores.
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
		case x < 15:
			sents = append(sents, defs[r.IntN(len(defs))])
		case x < 35:
			for range between(r, 3, 5) {
				sents = append(sents, fact(r))
			}
		case x < 55:
			for range between(r, 3, 5) {
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
	switch r.IntN(5) {
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

// arithmetic states one sum or difference in words (never in the answer
// format's symbols).
func arithmetic(r *data.RNG) string {
	switch r.IntN(3) {
	case 0:
		a, c := between(r, -130, -10), between(r, -130, -10)
		return fmt.Sprintf("%d minus %d is %d.", a, c, a-c)
	case 1:
		a, c, d := between(r, 0, 46), between(r, 0, 30), between(r, 0, 12)
		return fmt.Sprintf("%d plus %d plus %d is %d.", a, c, d, a+c+d)
	default:
		a, c := between(r, 0, 120), between(r, 40, 170)
		return fmt.Sprintf("%d minus %d leaves %d.", a, c, a-c)
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
