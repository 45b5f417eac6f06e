package memory

import (
	"encoding/json"
	"fmt"
	"strings"
)

// FormatBytes prints n with a binary unit: "1.50 GiB", "512.0 MiB".
func FormatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1024, 0
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	prec := 2
	if v >= 100 || v <= -100 {
		prec = 1
	}
	return fmt.Sprintf("%.*f %ciB", prec, v, units[i])
}

// Table renders b as an aligned text table: one row per term (with the
// phase it belongs to and why), then the step and load sums and the total.
func Table(b Breakdown) string {
	var sb strings.Builder
	w := len("total")
	for _, t := range b.Terms {
		w = max(w, len(t.Name))
	}
	for _, t := range b.Terms {
		phase := "step+load"
		switch {
		case t.InStep && !t.InLoad:
			phase = "step"
		case !t.InStep && t.InLoad:
			phase = "load"
		}
		fmt.Fprintf(&sb, "%-*s %12s  %-9s  %s\n", w, t.Name, FormatBytes(t.Bytes), phase, t.Why)
	}
	fmt.Fprintf(&sb, "%s\n", strings.Repeat("-", w+13))
	fmt.Fprintf(&sb, "%-*s %12s  during a training step\n", w, "step", FormatBytes(b.Step))
	fmt.Fprintf(&sb, "%-*s %12s  while loading the base weights\n", w, "load", FormatBytes(b.Load))
	fmt.Fprintf(&sb, "%-*s %12s  peak (%s)\n", w, "total", FormatBytes(b.Total), b.Peak())
	return sb.String()
}

// jsonBreakdown is the --json shape: total_bytes and terms (name → bytes)
// first, details after.
type jsonBreakdown struct {
	TotalBytes      int64            `json:"total_bytes"`
	Terms           map[string]int64 `json:"terms"`
	StepBytes       int64            `json:"step_bytes"`
	LoadBytes       int64            `json:"load_bytes"`
	Peak            string           `json:"peak"`
	BaseParams      int64            `json:"base_params"`
	TrainableParams int64            `json:"trainable_params"`
	Tokens          int64            `json:"tokens"`
	Details         []jsonTerm       `json:"details"`
}

type jsonTerm struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	InStep bool   `json:"in_step"`
	InLoad bool   `json:"in_load"`
	Why    string `json:"why"`
}

// MarshalJSON writes {"total_bytes", "terms": {name: bytes}, ...}.
func (b Breakdown) MarshalJSON() ([]byte, error) {
	j := jsonBreakdown{TotalBytes: b.Total, Terms: map[string]int64{}, StepBytes: b.Step, LoadBytes: b.Load, Peak: b.Peak(),
		BaseParams: b.BaseParams, TrainableParams: b.TrainableParams, Tokens: b.Tokens, Details: []jsonTerm{}}
	for _, t := range b.Terms {
		j.Terms[t.Name] += t.Bytes
		j.Details = append(j.Details, jsonTerm{t.Name, t.Bytes, t.InStep, t.InLoad, t.Why})
	}
	return json.Marshal(j)
}
