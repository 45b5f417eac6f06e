package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// file builds a safetensors file from a raw header and dataLen data bytes.
func file(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

func testTensors() []Tensor {
	mk := func(n int, scale float64) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(math.Sin(float64(i)*0.7) * scale)
		}
		return d
	}
	return []Tensor{
		{Name: "model.layers.0.self_attn.q_proj.weight", Shape: []int{64, 32}, Data: mk(64*32, 0.1)},
		{Name: "b.bias", Shape: []int{7}, Data: mk(7, 3)},
		{Name: "a.scalar", Shape: nil, Data: []float32{1.5}},
		{Name: "c.empty", Shape: []int{0, 4}, Data: nil},
		{Name: "d.cube", Shape: []int{2, 3, 4}, Data: mk(24, 1000)},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	for _, c := range []struct {
		dt     DType
		relTol float64 // half a unit in the last place, relative
	}{{F32, 0}, {F16, 1.0 / 2048}, {BF16, 1.0 / 256}} {
		t.Run(string(c.dt), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.safetensors")
			in := testTensors()
			md := map[string]string{"format": "pt", "step": "12"}
			if err := Write(path, in, c.dt, md); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o644 {
				t.Errorf("mode %v", st.Mode().Perm())
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Errorf("temp file left behind: %v", ents)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Metadata["step"] != "12" || len(f.Metadata) != 2 {
				t.Errorf("metadata %v", f.Metadata)
			}
			want := []string{"a.scalar", "b.bias", "c.empty", "d.cube", "model.layers.0.self_attn.q_proj.weight"}
			if !slices.Equal(f.Names(), want) {
				t.Errorf("names %v", f.Names())
			}
			for _, tn := range in {
				info, ok := f.Info(tn.Name)
				if !ok || info.DType != c.dt || !slices.Equal(info.Shape, tn.Shape) && len(tn.Shape)+len(info.Shape) > 0 {
					t.Fatalf("info %+v", info)
				}
				got, err := f.Float32(tn.Name, tn.Shape...)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tn.Data) {
					t.Fatalf("%s: %d values, want %d", tn.Name, len(got), len(tn.Data))
				}
				for i, v := range tn.Data {
					if d := math.Abs(float64(got[i] - v)); d > c.relTol*math.Abs(float64(v)) {
						t.Fatalf("%s[%d] = %g, want %g", tn.Name, i, got[i], v)
					}
				}
			}
		})
	}
}

func TestEncodeDeterministicAndAligned(t *testing.T) {
	in := testTensors()
	var a, b bytes.Buffer
	if err := Encode(&a, in, BF16, map[string]string{"z": "1", "a": "2"}); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(in)
	if err := Encode(&b, in, BF16, map[string]string{"a": "2", "z": "1"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("output depends on input order")
	}
	n := binary.LittleEndian.Uint64(a.Bytes())
	if (8+n)%8 != 0 {
		t.Errorf("data section at %d, not 8-byte aligned", 8+n)
	}
	if !strings.Contains(a.String(), `"a.scalar":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}`) {
		t.Errorf("header %s", a.Bytes()[8:8+n])
	}
}

func TestWriteRejects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.safetensors")
	for _, c := range []struct {
		tensors []Tensor
		dt      DType
		md      map[string]string
		want    string
	}{
		{nil, I64, nil, `cannot write dtype "I64"`},
		{[]Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1}}}, F32, nil, `tensor "a": shape [2] holds 2 elements, data has 1`},
		{[]Tensor{{Name: "a", Data: []float32{1}}, {Name: "a", Data: []float32{1}}}, F32, nil, `duplicate tensor "a"`},
		{[]Tensor{{Name: "__metadata__", Data: []float32{1}}}, F32, nil, `reserved`},
		{[]Tensor{{Name: "", Data: []float32{1}}}, F32, nil, `empty name`},
		{[]Tensor{{Name: "a", Shape: []int{-1}}}, F32, nil, `negative dimension`},
		{[]Tensor{{Name: "a\xff", Data: []float32{1}}}, F32, nil, `not valid UTF-8`},
		{nil, F32, map[string]string{"k": "\xff"}, `not valid UTF-8`},
	} {
		err := Write(path, c.tensors, c.dt, c.md)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("Write: got %v, want %q", err, c.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestWriteReplacesAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	for i := range 3 {
		if err := Write(path, []Tensor{{Name: "step", Data: []float32{float32(i)}}}, F32, nil); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, err := f.Float32("step"); err != nil || v[0] != 2 {
		t.Fatalf("%v %v", v, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("%v", ents)
	}
}

func TestLookupErrors(t *testing.T) {
	var buf bytes.Buffer
	q := Tensor{Name: "model.layers.0.self_attn.q_proj.weight", Shape: []int{64, 32}, Data: make([]float32, 64*32)}
	if err := Encode(&buf, []Tensor{q}, F32, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse("model.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Float32("model.layers.0.self_attn.k_proj.weight")
	if want := `model.safetensors: tensor "model.layers.0.self_attn.k_proj.weight" not found`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Error("not ErrNotFound")
	}
	_, err = f.Float32(q.Name, 64, 64)
	if want := `model.safetensors: tensor "model.layers.0.self_attn.q_proj.weight" has shape [64 32], want [64 64]`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if _, err = f.Float32(q.Name, 64); err == nil || !strings.Contains(err.Error(), "want [64]") {
		t.Errorf("got %v", err)
	}
	if _, err = f.Int64(q.Name); err == nil || !strings.Contains(err.Error(), `tensor "model.layers.0.self_attn.q_proj.weight" is F32, not I32 or I64`) {
		t.Errorf("got %v", err)
	}
	if _, ok := f.Info("nope"); ok {
		t.Error("Info of a missing tensor")
	}
}

func TestParseRejects(t *testing.T) {
	valid := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	huge := binary.LittleEndian.AppendUint64(nil, 200<<20)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "x.safetensors: file is 3 bytes, too short for the 8-byte header length"},
		{"empty", nil, "file is 0 bytes"},
		{"len past end", binary.LittleEndian.AppendUint64(nil, 100), "x.safetensors: header length 100 runs past the end of the file (8 bytes)"},
		{"len absurd", append(huge, "{}"...), "header length 209715200 exceeds the 100 MiB limit"},
		{"len max", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), "exceeds the 100 MiB limit"},
		{"bad json", file(`{"a":`, 0), "x.safetensors: invalid header JSON"},
		{"not object", file(`[1,2]`, 0), "invalid header JSON: header is not a JSON object"},
		{"trailing", file(`{} {}`, 0), "trailing data after the header object"},
		{"duplicate", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), `duplicate key "a"`},
		{"bad metadata", file(`{"__metadata__":{"k":1}}`, 0), "__metadata__ is not an object of strings"},
		{"entry not object", file(`{"a":3}`, 0), `tensor "a": invalid header entry`},
		{"unknown dtype", file(`{"a":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}`, 8), `x.safetensors: tensor "a": unknown dtype "F99"`},
		{"missing dtype", file(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, 8), `tensor "a": missing dtype`},
		{"null shape", file(`{"a":{"dtype":"F32","shape":null,"data_offsets":[0,8]}}`, 8), `tensor "a": missing shape`},
		{"missing offsets", file(`{"a":{"dtype":"F32","shape":[2]}}`, 8), `tensor "a": missing data_offsets`},
		{"negative dim", file(`{"a":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}}`, 8), `tensor "a": negative dimension in shape [-1 2]`},
		{"overflow dim", file(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8), `tensor "a": shape [4294967296 4294967296] overflows`},
		{"dim beyond int64", file(`{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}`, 8), `tensor "a": invalid header entry`},
		{"fractional dim", file(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, 8), `tensor "a": invalid header entry`},
		{"three offsets", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}`, 8), `tensor "a": data_offsets [0 4 8] is not [begin, end]`},
		{"negative offset", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}`, 8), `tensor "a": negative data_offsets [-8 0]`},
		{"begin after end", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, 8), `tensor "a": data_offsets [8 0]: begin after end`},
		{"past data", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 8), `tensor "a": data_offsets [4 12] run past the data section (8 bytes)`},
		{"truncated file", file(valid, 7), `tensor "a": data_offsets [0 8] run past the data section (7 bytes)`},
		{"size mismatch", file(`{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}}`, 8), `x.safetensors: tensor "a": holds 8 bytes, want 12 (shape [2 3] of BF16, 2 bytes each)`},
		{"overlap", file(`{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 12), `x.safetensors: tensors "a" [0 8] and "b" [4 12] overlap`},
		{"same range", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, 4), `tensors "a" [0 4] and "b" [0 4] overlap`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("x.safetensors", c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "x.safetensors: ") {
				t.Errorf("error does not name the file: %v", err)
			}
			if _, err := ParseHeader(c.data); err == nil {
				t.Error("ParseHeader accepted it")
			}
			// The same through Open, from disk.
			path := filepath.Join(t.TempDir(), "x.safetensors")
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), path+": ") {
				t.Errorf("Open: got %v, want %q", err, c.want)
			}
		})
	}
	// Accepted oddities: gaps between tensors, an empty tensor anywhere,
	// unknown fields, extra trailing bytes, an empty header.
	for _, h := range []string{
		valid,
		`{}`,
		`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[5,5]}}`,
		`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":true},"__metadata__":{}}  `,
	} {
		if _, err := Parse("ok.safetensors", file(h, 16)); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
}

func TestOpenMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.safetensors")
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v", err)
	}
}

// Reads a file written by Python's safetensors + torch (testdata/gen_dtypes.py)
// and checks the Go F16/BF16 rounding against PyTorch's.
func TestReadPythonDtypes(t *testing.T) {
	f, err := Open("testdata/dtypes.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata["writer"] != "gen_dtypes.py" {
		t.Errorf("metadata %v", f.Metadata)
	}
	x, err := f.Float32("x")
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b float32) bool {
		return a == b && math.Signbit(float64(a)) == math.Signbit(float64(b)) ||
			math.IsNaN(float64(a)) && math.IsNaN(float64(b))
	}
	for _, c := range []struct {
		name   string
		narrow func(float32) float32
	}{
		{"x.bf16", func(v float32) float32 { return bf16ToF32(f32ToBF16(v)) }},
		{"x.bf16.up", func(v float32) float32 { return bf16ToF32(f32ToBF16(v)) }},
		{"x.f16", func(v float32) float32 { return f16ToF32(f32ToF16(v)) }},
		{"x.f16.up", func(v float32) float32 { return f16ToF32(f32ToF16(v)) }},
		{"x.f64", func(v float32) float32 { return v }},
	} {
		got, err := f.Float32(c.name, len(x))
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range x {
			if want := c.narrow(v); !same(got[i], want) {
				t.Errorf("%s[%d]: torch %g, Go %g (from %g)", c.name, i, got[i], want, v)
			}
		}
	}
	i64, err := f.Int64("ids.i64", 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	i32, err := f.Int64("ids.i32", 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(i64, i32) || slices.Max(i64) >= 32000 || slices.Min(i64) < 0 || slices.Max(i64) == 0 {
		t.Errorf("ids %v / %v", i64, i32)
	}
	if s, err := f.Float32("scalar"); err != nil || len(s) != 1 || s[0] != 2.5 {
		t.Errorf("scalar %v %v", s, err)
	}
	if e, err := f.Float32("empty", 0, 3); err != nil || len(e) != 0 {
		t.Errorf("empty %v %v", e, err)
	}
	cube, err := f.Float32("cube", 2, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range cube {
		if v != float32(i) {
			t.Fatalf("cube[%d] = %g", i, v)
		}
	}
	if _, err := f.Float32("ids.i64"); err == nil || !strings.Contains(err.Error(), "is I64, not a float dtype") {
		t.Errorf("got %v", err)
	}
}

// Tensors bigger than the read chunk convert correctly across chunk edges.
func TestLargeTensorChunks(t *testing.T) {
	n := chunkBytes/2 + 12345 // > 2 chunks of F16/BF16, > 1 of F32 (well, ~2)
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(i % 2048)
	}
	for _, dt := range []DType{F32, F16, BF16} {
		var buf bytes.Buffer
		if err := Encode(&buf, []Tensor{{Name: "big", Shape: []int{n}, Data: data}}, dt, nil); err != nil {
			t.Fatal(err)
		}
		f, err := Parse("big.safetensors", buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.Float32("big", n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range data {
			want := data[i]
			if dt == BF16 {
				want = bf16ToF32(f32ToBF16(want))
			}
			if got[i] != want {
				t.Fatalf("%s: [%d] = %g, want %g", dt, i, got[i], want)
			}
		}
	}
}

// Float32Into fills a caller's buffer with what Float32 returns, and refuses
// a buffer of the wrong length instead of writing past or short of it.
func TestFloat32Into(t *testing.T) {
	a := Tensor{Name: "a", Shape: []int{3, 2}, Data: []float32{1, 2, 3, 4, 5, 6}}
	b := Tensor{Name: "b", Shape: []int{4}, Data: []float32{-1, -2, -3, -4}}
	var buf bytes.Buffer
	if err := Encode(&buf, []Tensor{a, b}, BF16, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse("m.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	host := []float32{9, 9, 9, 9, 9, 9, 9}
	if err := f.Float32Into(host[:6], "a", 3, 2); err != nil {
		t.Fatal(err)
	}
	if err := f.Float32Into(host[:4], "b"); err != nil {
		t.Fatal(err)
	}
	if want := []float32{-1, -2, -3, -4, 5, 6, 9}; !slices.Equal(host, want) {
		t.Errorf("got %v, want %v", host, want)
	}
	err = f.Float32Into(host[:5], "a")
	if want := `m.safetensors: tensor "a" has 6 elements, destination 5`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if err := f.Float32Into(host[:6], "a", 2, 3); err == nil || !strings.Contains(err.Error(), "want [2 3]") {
		t.Errorf("got %v", err)
	}
}
