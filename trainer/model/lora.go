package model

import (
	"fmt"
	"math"
	"strings"

	"github.com/peertune/peertune/kernels"
)

// LoRAConfig describes the low-rank adapters: W' = W + (Alpha/Rank)·B·A with
// A [Rank, in] and B [out, Rank] on each targeted projection of every layer.
type LoRAConfig struct {
	Rank    int
	Alpha   float64
	Dropout float64 // applied to the adapter's input only, as PEFT does
	Targets []Proj
}

// Scale is the adapter's output multiplier alpha/r (PEFT's default, not rsLoRA).
func (l LoRAConfig) Scale() float32 { return float32(l.Alpha / float64(l.Rank)) }

// DefaultLoRATargets are all seven projections: the seed's advice is to adapt
// every attention projection and optionally the MLP; adapting all of them costs
// little and is the common choice.
func DefaultLoRATargets() []Proj {
	return []Proj{ProjQ, ProjK, ProjV, ProjO, ProjGate, ProjUp, ProjDown}
}

// ParseTargets turns "q_proj,v_proj" into projections. "all" means all seven.
func ParseTargets(s string) ([]Proj, error) {
	s = strings.TrimSpace(s)
	if s == "all" || s == "all-linear" {
		return DefaultLoRATargets(), nil
	}
	var out []Proj
	seen := map[Proj]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		found := false
		for p := ProjQ; p < numProj; p++ {
			if projNames[p] == name {
				if !seen[p] {
					out = append(out, p)
					seen[p] = true
				}
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown LoRA target module %q; valid: %s (or all)", name, strings.Join(projNames[:], ","))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no LoRA target modules given; valid: %s (or all)", strings.Join(projNames[:], ","))
	}
	return out, nil
}

// Validate checks the adapter settings.
func (l LoRAConfig) Validate() error {
	if l.Rank <= 0 {
		return fmt.Errorf("LoRA rank %d: must be at least 1", l.Rank)
	}
	if l.Alpha <= 0 || math.IsNaN(l.Alpha) || math.IsInf(l.Alpha, 0) {
		return fmt.Errorf("LoRA alpha %g: must be a positive number", l.Alpha)
	}
	if l.Dropout < 0 || l.Dropout >= 1 || math.IsNaN(l.Dropout) {
		return fmt.Errorf("LoRA dropout %g: must be in [0, 1)", l.Dropout)
	}
	if len(l.Targets) == 0 {
		return fmt.Errorf("LoRA: no target modules")
	}
	return nil
}

// PEFT's key names for adapter tensors, as PeftModel.save_pretrained writes them.
func loraKey(layer int, p Proj, ab string) string {
	return fmt.Sprintf("base_model.model.model.layers.%d.%s.lora_%s.weight", layer, projPath[p], ab)
}

// loraLayout places every adapter's A [r, in] then B [out, r], layer by layer,
// in one flat trainable buffer.
func loraLayout(c Config, l LoRAConfig) *Layout {
	lay := &Layout{}
	for i := 0; i < c.Layers; i++ {
		for p := ProjQ; p < numProj; p++ {
			if !l.targets(p) {
				continue
			}
			in, out := p.dims(c)
			lay.add(loraKey(i, p, "A"), false, l.Rank, in)
			lay.add(loraKey(i, p, "B"), false, out, l.Rank)
		}
	}
	return lay
}

func (l LoRAConfig) targets(p Proj) bool {
	for _, t := range l.Targets {
		if t == p {
			return true
		}
	}
	return false
}

// Adapter is one projection's LoRA pair: views of A [r, in] and B [out, r].
type Adapter struct{ A, B kernels.Buffer }

// adapterViews returns, per layer, the adapters of each projection (nil
// entries for projections that are not targeted).
func adapterViews(c Config, l LoRAConfig, lay *Layout, buf kernels.Buffer) [][numProj]*Adapter {
	out := make([][numProj]*Adapter, c.Layers)
	for i := range out {
		for p := ProjQ; p < numProj; p++ {
			if l.targets(p) {
				out[i][p] = &Adapter{A: lay.View(buf, loraKey(i, p, "A")), B: lay.View(buf, loraKey(i, p, "B"))}
			}
		}
	}
	return out
}
