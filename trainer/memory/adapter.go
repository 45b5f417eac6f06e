package memory

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/peertune/peertune/trainer/model"
)

// projPath is each projection's module path inside a layer, as PEFT names
// adapter tensors (mirrors trainer/model; tested against SaveAdapter).
var projPath = map[model.Proj]string{
	model.ProjQ: "self_attn.q_proj", model.ProjK: "self_attn.k_proj", model.ProjV: "self_attn.v_proj",
	model.ProjO: "self_attn.o_proj", model.ProjGate: "mlp.gate_proj", model.ProjUp: "mlp.up_proj",
	model.ProjDown: "mlp.down_proj",
}

// AdapterFileBytes is the size of the adapter_model.safetensors that
// model.SaveAdapter writes for cfg and lc, with every tensor stored in
// elemBytes bytes (4: F32, what peertune writes; 2: BF16/F16): the 8-byte
// header length, the JSON header (padded to 8 bytes) and the data.
func AdapterFileBytes(cfg model.Config, lc model.LoRAConfig, elemBytes int) int64 {
	type entry struct {
		DType       string   `json:"dtype"`
		Shape       []int64  `json:"shape"`
		DataOffsets [2]int64 `json:"data_offsets"`
	}
	dt := map[int]string{4: "F32", 2: "BF16", 8: "F64"}[elemBytes]
	if dt == "" {
		dt = "F32"
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	// Data is laid out in name order; offsets only need each tensor's size
	// in that order, so collect names first.
	type tensor struct {
		name  string
		shape []int64
	}
	var ts []tensor
	r := int64(lc.Rank)
	for l := 0; l < cfg.Layers; l++ {
		for _, p := range uniqueTargets(lc.Targets) {
			in, out := projDims(cfg, p)
			base := fmt.Sprintf("base_model.model.model.layers.%d.%s.lora_", l, projPath[p])
			ts = append(ts, tensor{base + "A.weight", []int64{r, in}}, tensor{base + "B.weight", []int64{out, r}})
		}
	}
	sortTensors := func(a, b tensor) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	}
	slices.SortFunc(ts, sortTensors)
	var off int64
	for _, t := range ts {
		n := t.shape[0] * t.shape[1] * int64(elemBytes)
		header[t.name] = entry{DType: dt, Shape: t.shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	js, _ := json.Marshal(header) // a map of plain values always marshals
	hl := int64(len(js))
	hl += (8 - hl%8) % 8
	return 8 + hl + off
}
