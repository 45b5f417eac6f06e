// Package telecom is peertune's built-in data set: a deterministic generator
// of telecom calculation problems in the seed's instruction format, the
// evaluator that grades a model's answers, and the pretraining corpus of the
// tiny base model.
//
// The seed's example is task "snr", exactly:
//
//	{"instruction": "Compute the SNR for received power -80 dBm and noise -100 dBm",
//	 "response": "SNR = P_rx - N = -80 - (-100) = 20 dB"}
//
// Sibling tasks (link budget, EIRP, thermal noise, free-space path loss,
// Shannon capacity, dBm/dBW/mW and dB/linear conversions) each have one
// exact answer format (FormatPattern) and 1-3 phrasings of the question.
// Answers are integers, or one decimal for path loss, and restate their
// inputs, so every answer is checkable exactly.
//
// Usage:
//
//	exs := telecom.Generate(telecom.DefaultSeed, telecom.DefaultN)
//	sp, _ := data.Split(exs, data.Fractions{Val: 0.05, Test: 0.05}, splitSeed)
//	// ... train on sp.Train (see package data) ...
//	var rep telecom.Report
//	for _, ex := range sp.Test {
//		rep.Add(ex, generate(model, data.PromptTokens(ex, tok)))
//	}
//	fmt.Println(rep) // exact-match and format accuracy
//
// Corpus(seed, n) is prose about the same pieces without the template or the
// answer format: a base model pretrained on it knows the domain, and
// fine-tuning on Generate's examples teaches the task's format and
// conventions.
package telecom
