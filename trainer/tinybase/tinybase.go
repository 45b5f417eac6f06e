// Package tinybase embeds peertune's built-in base model: a small
// Llama-architecture model (preset "peertune-tiny") that peertune pretrained
// itself, with --method full, on the built-in telecom corpus (`make
// tiny-base` rebuilds it). It knows the domain's pieces — units, numbers,
// arithmetic in prose — but not the instruction format of the built-in task,
// which is what fine-tuning teaches.
package tinybase

import _ "embed"

//go:embed config.json
var configJSON []byte

//go:embed model.safetensors
var weights []byte

// Files returns the Hugging Face config.json and model.safetensors bytes. The
// caller must not modify them.
func Files() (config, model []byte) { return configJSON, weights }
