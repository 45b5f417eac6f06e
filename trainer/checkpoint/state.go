package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// State is everything besides tensors needed to continue training exactly.
//
// The data cursor, the learning-rate schedule's position, AdamW's bias
// correction and the dropout RNG are all pure functions of (Seed, Step) in
// peertune (DESIGN invariant 2; trainer/data/order.go), so Step and Seed are
// the whole of them: there is no RNG state to save.
type State struct {
	Step  int     // last completed optimizer step; training continues at Step+1
	Epoch float64 // informational: the fractional epoch reached
	Seed  uint64
	// JobHash identifies the job (hex of the config hash); a resume refuses a
	// different job. ConfigJSON is the job's config, so the refusal can name
	// the settings that differ (CheckJob).
	JobHash    string
	ConfigJSON json.RawMessage
	// Early-stopping state. BestVal may be +Inf (no evaluation yet); the best
	// parameters themselves travel as Tensors.Best.
	BestVal   float64
	BestStep  int
	SinceBest int
	// WorldHistory lists the worlds the job has trained in, oldest first.
	WorldHistory []WorldRecord
	// Extra carries anything else the trainer wants back (say, the
	// before-training evaluation for summary.json). May be nil.
	Extra map[string]string
}

// WorldRecord is one world (membership epoch) the job trained in, from step
// FromStep on.
type WorldRecord struct {
	Epoch    uint64   `json:"epoch"`
	Size     int      `json:"size"`
	FromStep int      `json:"from_step"`
	Peers    []string `json:"peers,omitempty"`
}

// stateFile is trainer_state.json. Floats go through jsonFloat so +Inf (no
// best validation loss yet) and NaN survive, which encoding/json refuses.
type stateFile struct {
	FormatVersion int               `json:"format_version"`
	Step          int               `json:"step"`
	Epoch         jsonFloat         `json:"epoch"`
	Seed          uint64            `json:"seed"`
	JobHash       string            `json:"job_hash"`
	Config        json.RawMessage   `json:"config,omitempty"`
	BestVal       jsonFloat         `json:"best_val"`
	BestStep      int               `json:"best_step"`
	SinceBest     int               `json:"since_best"`
	WorldHistory  []WorldRecord     `json:"world_history"`
	Extra         map[string]string `json:"extra,omitempty"`
}

func encodeState(st State) ([]byte, error) {
	if st.ConfigJSON != nil && !json.Valid(st.ConfigJSON) {
		return nil, errors.New("State.ConfigJSON is not valid JSON")
	}
	f := stateFile{
		FormatVersion: FormatVersion, Step: st.Step, Epoch: jsonFloat(st.Epoch), Seed: st.Seed,
		JobHash: st.JobHash, Config: st.ConfigJSON, BestVal: jsonFloat(st.BestVal), BestStep: st.BestStep,
		SinceBest: st.SinceBest, WorldHistory: st.WorldHistory, Extra: st.Extra,
	}
	if f.WorldHistory == nil {
		f.WorldHistory = []WorldRecord{}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

func decodeState(data []byte) (State, error) {
	var f stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return State{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return State{}, errors.New("invalid JSON: data after the object")
	}
	switch {
	case f.FormatVersion != FormatVersion:
		return State{}, fmt.Errorf("format_version %d, this peertune reads %d", f.FormatVersion, FormatVersion)
	case f.Step < 0:
		return State{}, fmt.Errorf("negative step %d", f.Step)
	case f.BestStep < 0 || f.SinceBest < 0:
		return State{}, fmt.Errorf("negative best_step %d or since_best %d", f.BestStep, f.SinceBest)
	}
	return State{
		Step: f.Step, Epoch: float64(f.Epoch), Seed: f.Seed, JobHash: f.JobHash, ConfigJSON: f.Config,
		BestVal: float64(f.BestVal), BestStep: f.BestStep, SinceBest: f.SinceBest,
		WorldHistory: f.WorldHistory, Extra: f.Extra,
	}, nil
}

// jsonFloat is a float64 that encodes ±Inf and NaN as the strings "+Inf",
// "-Inf" and "NaN"; finite values encode as encoding/json does, which
// round-trips every float64 exactly.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return json.Marshal(v)
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN":
			*f = jsonFloat(math.NaN())
		case "+Inf", "Inf":
			*f = jsonFloat(math.Inf(1))
		case "-Inf":
			*f = jsonFloat(math.Inf(-1))
		default:
			return fmt.Errorf("float %q: want a number, \"+Inf\", \"-Inf\" or \"NaN\"", s)
		}
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("float %s: %w", b, err)
	}
	*f = jsonFloat(v)
	return nil
}

// ErrJobMismatch is wrapped by CheckJob's error: the checkpoint belongs to a
// different job.
var ErrJobMismatch = errors.New("checkpoint belongs to a different job")

// CheckJob refuses to resume st in a job whose hash differs from st.JobHash.
// configJSON (the current job's config, as stored in State.ConfigJSON) lets
// the error name the settings that differ, e.g.
//
//	checkpoint belongs to a different job: LR 0.002 -> 0.001; Steps 100 -> 200
//
// A checkpoint without a job hash is accepted (nothing to compare).
func (st State) CheckJob(hash string, configJSON []byte) error {
	if st.JobHash == "" || st.JobHash == hash {
		return nil
	}
	diffs := DiffJSON(st.ConfigJSON, configJSON)
	if len(diffs) == 0 {
		return fmt.Errorf("%w (job hash %s, this job %s)", ErrJobMismatch, st.JobHash, hash)
	}
	const maxShown = 8
	more := ""
	if len(diffs) > maxShown {
		more = fmt.Sprintf("; and %d more", len(diffs)-maxShown)
		diffs = diffs[:maxShown]
	}
	return fmt.Errorf("%w: %s%s (checkpoint -> this job)", ErrJobMismatch, strings.Join(diffs, "; "), more)
}

// DiffJSON lists the differences between two JSON documents as
// "path old -> new", paths dotted ("a.b[2]"), sorted. Invalid or absent JSON
// on either side gives one entry saying so.
func DiffJSON(old, cur []byte) []string {
	var a, b any
	errA := json.Unmarshal(old, &a)
	errB := json.Unmarshal(cur, &b)
	switch {
	case len(old) == 0:
		return []string{"the checkpoint stores no config to compare"}
	case errA != nil:
		return []string{"the checkpoint's config is not valid JSON"}
	case errB != nil:
		return []string{"this job's config is not valid JSON"}
	}
	var out []string
	diffValue("", a, b, &out)
	slices.Sort(out)
	return out
}

func diffValue(path string, a, b any, out *[]string) {
	ma, okA := a.(map[string]any)
	mb, okB := b.(map[string]any)
	if okA && okB {
		keys := map[string]bool{}
		for k := range ma {
			keys[k] = true
		}
		for k := range mb {
			keys[k] = true
		}
		for k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			va, inA := ma[k]
			vb, inB := mb[k]
			switch {
			case !inA:
				*out = append(*out, fmt.Sprintf("%s (absent) -> %s", p, short(vb)))
			case !inB:
				*out = append(*out, fmt.Sprintf("%s %s -> (absent)", p, short(va)))
			default:
				diffValue(p, va, vb, out)
			}
		}
		return
	}
	la, okA := a.([]any)
	lb, okB := b.([]any)
	if okA && okB && len(la) == len(lb) {
		for i := range la {
			diffValue(fmt.Sprintf("%s[%d]", path, i), la[i], lb[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		if path == "" {
			path = "config"
		}
		*out = append(*out, fmt.Sprintf("%s %s -> %s", path, short(a), short(b)))
	}
}

func short(v any) string {
	data, _ := json.Marshal(v) // decoded JSON always marshals
	s := string(data)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}
