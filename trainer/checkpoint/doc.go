// Package checkpoint saves and resumes training state (DESIGN invariant 4:
// checkpoints are atomic, self-describing, checksummed, and resume exactly).
//
// It knows nothing of the model: the caller hands it the flat trainable
// buffers (Params, AdamW's M and V, the early-stopping best snapshot), a
// State, and a callback that writes the adapter. A checkpoint is a directory
//
//	<dir>/step-000120/
//	    adapter_config.json          } written by the callback (m.SaveAdapter:
//	    adapter_model.safetensors    } a loadable PEFT adapter; m.SaveBase for full FT)
//	    optimizer.safetensors        params, adam_m, adam_v [, best]: F32 [N], bitwise
//	    trainer_state.json           State: step, seed, job hash + config, early stopping, worlds
//	    manifest.json                written LAST: every file's size and SHA-256
//
// Save writes it as .tmp-step-000120-<rand>, fsyncs every file and the
// directory, renames it to step-000120 and fsyncs the parent, so a crash
// leaves a complete checkpoint or none. A directory without a manifest, or
// whose files do not match it, is invalid; Latest reports and skips it.
//
// Nothing else needs saving for an exact resume: step s's samples are a pure
// function of (seed, s) (trainer/data/order.go), and so are the learning
// rate, AdamW's bias correction and the dropout masks. The data cursor is
// State.Step. So a resume on any number of nodes consumes the same samples.
//
// The training loop (rank 0 writes; every rank resumes):
//
//	// at start, with --resume
//	path, st, err := checkpoint.Latest(ckptDir, log)
//	switch {
//	case errors.Is(err, checkpoint.ErrAllInvalid):
//		return err // checkpoints exist but all are damaged: do not start over silently
//	case errors.Is(err, checkpoint.ErrNoCheckpoint):
//		// nothing to resume: start at step 1
//	case err != nil:
//		return err
//	default:
//		if err := st.CheckJob(jobHash, configJSON); err != nil {
//			return err // names the settings that differ
//		}
//		st, ts, err := checkpoint.Load(path) // verifies again, reads the tensors
//		...
//		ts.CheckLayout(modelSpans)            // optional: same layout as the model
//		be.CopyIn(m.Params, ts.Params); be.CopyIn(m.M, ts.M); be.CopyIn(m.V, ts.V)
//		start = st.Step + 1                   // best, bestVal, sinceBest from st and ts.Best
//	}
//	for step := start; step <= total; step++ {
//		trainStep(step)
//		evaluateIfDue(step) // before saving: the early-stopping state then includes step
//		if rank == 0 && every > 0 && step%every == 0 {
//			// copy Params, M, V (and best) out of the backend, then
//			_, err := checkpoint.Save(ckptDir, st, ts,
//				func(d string) error { return m.SaveAdapter(d, baseName) }, // m.SaveBase for full FT
//				checkpoint.Options{Keep: keep, Log: log})
//		}
//	}
//
// On SIGTERM the loop stops between steps (a step cut short in its all-reduce
// leaves Params, M and V as they were: AdamW runs after the all-reduce), and
// rank 0 saves the last completed step the same way before exiting.
package checkpoint
