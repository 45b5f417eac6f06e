package safetensors

import (
	"bytes"
	"testing"
)

// FuzzParseHeader feeds arbitrary bytes as a whole file. ParseHeader must
// never panic, and whatever it accepts must be safe to read: every tensor
// inside the data section, sized by its shape, no two overlapping, and
// Parse + Float32/Int64 must then read every tensor without error.
//
//	go test ./trainer/model/safetensors -run '^$' -fuzz FuzzParseHeader -fuzztime 3m
//
// Seeds live in testdata/fuzz/FuzzParseHeader plus those added below.
func FuzzParseHeader(f *testing.F) {
	var buf bytes.Buffer
	if err := Encode(&buf, testTensors()[:4], BF16, map[string]string{"format": "pt"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(file(`{"a":{"dtype":"I64","shape":[2,3],"data_offsets":[0,48]},"__metadata__":{"k":"v"}}`, 48))
	f.Add(file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 12))
	f.Add(file(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8))
	f.Add(file(`{"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}} `, 2))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(data)
		if err != nil {
			if h != nil {
				t.Fatal("header and error")
			}
			return
		}
		dataLen := int64(len(data)) - h.DataStart
		if h.DataStart < 8 || dataLen < 0 {
			t.Fatalf("DataStart %d of %d", h.DataStart, len(data))
		}
		for i, in := range h.Tensors {
			if i > 0 && h.Tensors[i-1].Name >= in.Name {
				t.Fatalf("not sorted: %q, %q", h.Tensors[i-1].Name, in.Name)
			}
			if in.Begin < 0 || in.Begin > in.End || in.End > dataLen {
				t.Fatalf("%q: [%d %d] outside %d", in.Name, in.Begin, in.End, dataLen)
			}
			if int64(in.NumElements())*int64(in.DType.Size()) != in.End-in.Begin {
				t.Fatalf("%q: size mismatch", in.Name)
			}
			for _, o := range h.Tensors[:i] {
				if o.End > o.Begin && in.End > in.Begin && o.Begin < in.End && in.Begin < o.End {
					t.Fatalf("%q and %q overlap", o.Name, in.Name)
				}
			}
		}
		pf, err := Parse("fuzz.safetensors", data)
		if err != nil {
			t.Fatalf("ParseHeader accepted, Parse: %v", err)
		}
		for _, in := range h.Tensors {
			switch {
			case in.DType.isFloat():
				v, err := pf.Float32(in.Name, in.Shape...)
				if err != nil || len(v) != in.NumElements() {
					t.Fatalf("%q: %v", in.Name, err)
				}
			case in.DType.isInt():
				v, err := pf.Int64(in.Name, in.Shape...)
				if err != nil || len(v) != in.NumElements() {
					t.Fatalf("%q: %v", in.Name, err)
				}
			}
		}
	})
}
