// Package data is everything between a JSONL file and the token rows of an
// optimizer step: formats and prompt templates, tokenizers, the train/val/test
// split, the train/eval contamination check, tokenisation with prompt
// masking, truncation, packing, and the global sample order that makes
// training world-size invariant (DESIGN.md invariant 2). Pure Go, no model
// code, no I/O beyond reading and writing JSONL.
//
// The usage loop, in the order the steps must run:
//
//	exs, rst, err := data.ReadJSONL(path, data.ReadOptions{Format: "auto", SkipInvalid: skip})
//	// log rst: examples, blank lines, invalid lines skipped
//
//	// 1. Split FIRST, on the raw normalised examples (the seed's lesson:
//	//    split before any processing).
//	sp, err := data.Split(exs, data.Fractions{Val: 0.05, Test: 0.05}, splitSeed)
//
//	// 2. Contamination check: refuse to train on overlap unless --allow-overlap.
//	rep := data.CheckOverlap(sp.Train, append(sp.Val, sp.Test...), data.OverlapOptions{})
//	if err := rep.Err(); err != nil && !allowOverlap {
//		return err
//	}
//
//	// 3. Tokenise, mask the prompt, truncate (or fail) — all before training starts.
//	tok := data.ByteTokenizer{}
//	seqs, est, err := data.EncodeAll(sp.Train, tok, data.EncodeOptions{SeqLen: 256, Truncate: truncate})
//	rows, err := data.Pack(seqs, 256, tok.PAD()) // or data.PadRows(seqs, 256, tok.PAD())
//
//	// 4. Global order: step s takes the same global rows whatever the world size.
//	order, err := data.NewOrder(shuffleSeed, len(rows), globalBatch)
//	for step := startStep; step < steps; step++ {
//		samples := order.Step(step) // globalBatch samples, may straddle epochs
//		global := make([]data.Row, len(samples))
//		for i, s := range samples {
//			global[i] = rows[s.Index]
//		}
//		norm := data.TargetTokens(global)                    // same on every rank
//		mine := data.RankSlice(global, world.Rank, world.Size) // this rank's part
//		// forward/backward over mine in micro-batches, summing token losses,
//		// divide by norm, all-reduce the gradients (sum), optimizer step.
//	}
//
// Labels are already shifted (see encode.go): Labels[t] is the target for
// the prediction at position t, IgnoreIndex (-100) where there is none.
//
// The built-in data set (a generator of telecom calculation problems in the
// seed's format, its scorer, and the pretraining corpus of the tiny base
// model) is in package telecom.
package data
