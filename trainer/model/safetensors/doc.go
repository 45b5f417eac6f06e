// Package safetensors reads and writes the safetensors tensor format used by
// Hugging Face checkpoints and PEFT adapters.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON header
//
//	{"name": {"dtype": "F32", "shape": [64, 32], "data_offsets": [begin, end]},
//	 "__metadata__": {"format": "pt"}}
//
// and then the data section; data_offsets are byte offsets into the data
// section, end exclusive, and tensors are row-major little-endian.
//
// Reading validates the whole header up front (Open, Parse, ParseHeader):
// the header length against the file and MaxHeaderSize, the JSON (duplicate
// keys rejected), dtypes, shapes (no negative or overflowing dimensions),
// offsets inside the data section, each tensor's byte length against its
// shape, and that no two tensors overlap. Every error names the file and,
// where there is one, the tensor. Tensor data is then read on demand:
//
//	f, err := safetensors.Open("model.safetensors")
//	if err != nil {
//		return err
//	}
//	defer f.Close()
//	for _, name := range f.Names() { // sorted
//		info, _ := f.Info(name)
//		fmt.Println(name, info.DType, info.Shape)
//	}
//	// F32, F16, BF16 (and F64) widen to float32; the shape must match exactly.
//	q, err := f.Float32("model.layers.0.self_attn.q_proj.weight", 64, 64)
//	// A missing tensor wraps ErrNotFound (tied embeddings have no lm_head.weight).
//	head, err := f.Float32("lm_head.weight")
//	if errors.Is(err, safetensors.ErrNotFound) { ... }
//	// I32 and I64 (token ids, labels) read as int64.
//	ids, err := f.Int64("input_ids")
//
// Writing takes float32 tensors and stores them all as F32, F16 or BF16:
//
//	err := safetensors.Write("adapter_model.safetensors", []safetensors.Tensor{
//		{Name: "a", Shape: []int{8, 64}, Data: a},
//	}, safetensors.BF16, map[string]string{"format": "pt"})
//
// F16 and BF16 are rounded to nearest, ties to even (what PyTorch's
// .half() and .bfloat16() do): values beyond the format's range become ±Inf,
// F16 values below 2^-14 become subnormals, and NaN stays NaN. F32 is exact.
// Write is atomic (temporary file in the same directory, fsync, rename, fsync
// of the directory); Encode writes the same bytes to any io.Writer. The
// output is deterministic: tensors in name order, header keys sorted, header
// padded with spaces to 8-byte alignment as the reference writer does.
//
// Other dtypes of the format (BOOL, U8, I8, I16, U16, U32, U64, F8_E4M3,
// F8_E5M2, F8_E8M0) are recognised and validated, so files holding them open,
// but reading their data is an error.
package safetensors
