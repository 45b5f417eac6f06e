package trainer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"go.uber.org/zap"

	"github.com/peertune/peertune/internal/atomicfile"
	"github.com/peertune/peertune/trainer/checkpoint"
	"github.com/peertune/peertune/trainer/model"
)

// CheckpointDir is where a job's checkpoints live.
func (s *Session) CheckpointDir() string { return filepath.Join(s.Cfg.Out, "checkpoints") }

// RecordWorld notes a world the job trained in (kept in checkpoints).
func (s *Session) RecordWorld(w checkpoint.WorldRecord) { s.worlds = append(s.worlds, w) }

func (s *Session) spans() []checkpoint.Span {
	out := make([]checkpoint.Span, len(s.Model.TrainLayout.Tensors))
	for i, t := range s.Model.TrainLayout.Tensors {
		out[i] = checkpoint.Span{Name: t.Name, Offset: t.Offset, Shape: t.Shape}
	}
	return out
}

// SaveCheckpoint writes the state of the last completed step: the adapter
// (or full weights) in a loadable format, AdamW's moments, the trainer's
// progress and a manifest with checksums, atomically.
func (s *Session) SaveCheckpoint() (string, error) {
	st := s.Trainer.State()
	if st.Step == 0 {
		return "", errors.New("no completed step to checkpoint")
	}
	be, m := s.be, s.Model
	ts := checkpoint.Tensors{Params: make([]float32, m.Params.Len()), M: make([]float32, m.M.Len()), V: make([]float32, m.V.Len()),
		Best: s.Trainer.Best(), Layout: s.spans()}
	if err := be.CopyOut(ts.Params, m.Params); err != nil {
		return "", err
	}
	if err := be.CopyOut(ts.M, m.M); err != nil {
		return "", err
	}
	if err := be.CopyOut(ts.V, m.V); err != nil {
		return "", err
	}
	cs := checkpoint.State{
		Step: st.Step, Epoch: s.Trainer.order.StepEpoch(st.Step), Seed: s.Cfg.Seed,
		JobHash: s.jobHash(), ConfigJSON: s.Cfg.CanonicalJSON(),
		BestVal: st.BestVal, BestStep: st.BestStep, SinceBest: st.SinceBest, WorldHistory: s.worlds,
		Extra: map[string]string{
			"final_loss":        strconv.FormatFloat(st.FinalLoss, 'g', -1, 64),
			"stopped":           strconv.FormatBool(st.Stopped),
			"baseline_done":     strconv.FormatBool(st.Baseline.Done),
			"baseline_val_loss": strconv.FormatFloat(st.Baseline.ValLoss, 'g', -1, 64),
			"baseline_exact":    strconv.FormatFloat(st.Baseline.ExactMatch, 'g', -1, 64),
			"baseline_format":   strconv.FormatFloat(st.Baseline.FormatAcc, 'g', -1, 64),
			"baseline_scored":   strconv.Itoa(st.Baseline.Scored),
		},
	}
	save := func(dir string) error { return m.SaveAdapter(dir, s.Src.Name) }
	if m.Opts.Method == model.MethodFull {
		save = m.SaveBase
	}
	path, err := checkpoint.Save(s.CheckpointDir(), cs, ts, save, checkpoint.Options{Keep: s.Cfg.Keep, Log: s.log})
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: %w", st.Step, err)
	}
	s.log.Info("checkpoint written", zap.Int("step", st.Step), zap.String("path", path))
	return path, nil
}

// jobHash identifies the job and its base weights for checkpoints.
func (s *Session) jobHash() string { return s.Cfg.Hash() + ":" + s.Src.Hash }

// Resume loads the newest valid checkpoint (skipping, with a warning, any
// newer one that is partial or corrupt) and continues from it. A checkpoint
// of another job is refused with the settings that differ. It returns
// checkpoint.ErrNoCheckpoint when there is none.
func (s *Session) Resume() error {
	path, st, err := checkpoint.Latest(s.CheckpointDir(), s.log)
	if err != nil {
		return err
	}
	if err := st.CheckJob(s.jobHash(), s.Cfg.CanonicalJSON()); err != nil {
		return fmt.Errorf("--resume %s: %w", path, err)
	}
	_, ts, err := checkpoint.Load(path)
	if err != nil {
		return fmt.Errorf("--resume: %w", err)
	}
	if err := ts.CheckLayout(s.spans()); err != nil {
		return fmt.Errorf("--resume %s: %w", path, err)
	}
	m := s.Model
	if len(ts.Params) != m.Params.Len() {
		return fmt.Errorf("--resume %s: %d trainable parameters, the model has %d", path, len(ts.Params), m.Params.Len())
	}
	for _, c := range []struct {
		name string
		err  error
	}{{"params", s.be.CopyIn(m.Params, ts.Params)}, {"adam_m", s.be.CopyIn(m.M, ts.M)}, {"adam_v", s.be.CopyIn(m.V, ts.V)}} {
		if c.err != nil {
			return fmt.Errorf("--resume: %s: %w", c.name, c.err)
		}
	}
	f := func(k string) float64 { v, _ := strconv.ParseFloat(st.Extra[k], 64); return v }
	scored, _ := strconv.Atoi(st.Extra["baseline_scored"])
	rs := RunState{Step: st.Step, FinalLoss: f("final_loss"), BestVal: st.BestVal, BestStep: st.BestStep, SinceBest: st.SinceBest,
		Stopped: st.Extra["stopped"] == "true",
		Baseline: Baseline{Done: st.Extra["baseline_done"] == "true", ValLoss: f("baseline_val_loss"),
			ExactMatch: f("baseline_exact"), FormatAcc: f("baseline_format"), Scored: scored}}
	s.Trainer.SetState(rs, ts.Best)
	s.worlds = st.WorldHistory
	s.resumed = true
	s.log.Info("resumed", zap.String("checkpoint", path), zap.Int("step", st.Step))
	return nil
}

// truncateMetrics keeps the records of steps up to `step`, so that the
// resumed run's lines continue the curve instead of repeating steps.
func truncateMetrics(path string, step int) error {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var rec struct {
			Step *int `json:"step"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // a line cut short by a crash
		}
		if rec.Step == nil || *rec.Step <= step {
			out.Write(sc.Bytes())
			out.WriteByte('\n')
		}
	}
	return atomicfile.WriteFile(path, out.Bytes(), 0o644)
}
