package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// MaxHeaderSize caps the JSON header length a file may declare (100 MiB).
// Real headers are a few hundred KiB even for large models; the cap keeps a
// corrupt length field from turning into a huge allocation.
const MaxHeaderSize = 100 << 20

// metadataKey is the reserved header entry holding string metadata.
const metadataKey = "__metadata__"

// Info describes one tensor in a file.
type Info struct {
	Name  string
	DType DType
	Shape []int // empty for a scalar
	// Begin and End are byte offsets relative to the start of the data
	// section (Header.DataStart), End exclusive.
	Begin, End int64
}

// NumElements is the product of Shape (1 for a scalar).
func (i Info) NumElements() int {
	n := 1
	for _, d := range i.Shape {
		n *= d
	}
	return n
}

// Header is a parsed and validated safetensors header.
type Header struct {
	Tensors   []Info            // sorted by name
	Metadata  map[string]string // the __metadata__ entry; nil when absent
	DataStart int64             // file offset of the data section: 8 + header length
}

// ParseHeader parses and validates the header of a safetensors file whose
// complete contents are data. Every check Open makes is made here: lengths,
// JSON, dtypes, shapes, offsets inside the data section, sizes matching
// shapes, no overlapping tensors. It never panics on any input.
func ParseHeader(data []byte) (*Header, error) {
	h, err := readHeader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return h, nil
}

// readHeader reads the header from r, a file of size bytes. Its errors carry
// no file name: callers add it.
func readHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, fmt.Errorf("file is %d bytes, too short for the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if k, err := r.ReadAt(lenBuf[:], 0); k < len(lenBuf) {
		return nil, fmt.Errorf("read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header length %d exceeds the %d MiB limit", n, MaxHeaderSize>>20)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("header length %d runs past the end of the file (%d bytes)", n, size)
	}
	raw := make([]byte, n)
	// io.ReaderAt may return io.EOF with a full read at the end of the input.
	if k, err := r.ReadAt(raw, 8); k < len(raw) {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, err := decodeHeader(raw, size-8-int64(n))
	if err != nil {
		return nil, err
	}
	h.DataStart = 8 + int64(n)
	return h, nil
}

// rawInfo is one tensor entry as it appears in the JSON. Pointers tell a
// missing (or null) field from a zero one; unknown fields are ignored.
type rawInfo struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// decodeHeader decodes and validates the JSON header; dataLen is the size of
// the data section that follows it.
func decodeHeader(raw []byte, dataLen int64) (*Header, error) {
	entries, err := decodeObject(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid header JSON: %w", err)
	}
	h := &Header{Tensors: make([]Info, 0, len(entries))}
	for _, e := range entries {
		if e.key == metadataKey {
			var md map[string]string
			if err := json.Unmarshal(e.value, &md); err != nil || md == nil {
				return nil, fmt.Errorf("invalid header JSON: %s is not an object of strings", metadataKey)
			}
			h.Metadata = md
			continue
		}
		info, err := decodeInfo(e.key, e.value, dataLen)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, info)
	}
	if err := checkOverlap(h.Tensors); err != nil {
		return nil, err
	}
	sort.Slice(h.Tensors, func(i, j int) bool { return h.Tensors[i].Name < h.Tensors[j].Name })
	return h, nil
}

type entry struct {
	key   string
	value json.RawMessage
}

// decodeObject splits a JSON object into its members in order, rejecting
// duplicate keys (encoding/json would silently keep the last) and anything
// but whitespace after the closing brace (writers pad with spaces).
func decodeObject(raw []byte) ([]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("header is not a JSON object")
	}
	var out []entry
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected %v", tok)
		}
		if seen[key] {
			return nil, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("value of %q: %w", key, err)
		}
		out = append(out, entry{key, v})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, err
	}
	rest := raw[dec.InputOffset():]
	if len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, errors.New("trailing data after the header object")
	}
	return out, nil
}

func decodeInfo(name string, value json.RawMessage, dataLen int64) (Info, error) {
	var ri rawInfo
	if err := json.Unmarshal(value, &ri); err != nil {
		return Info{}, fmt.Errorf("tensor %q: invalid header entry: %w", name, err)
	}
	switch {
	case ri.DType == nil:
		return Info{}, fmt.Errorf("tensor %q: missing dtype", name)
	case ri.Shape == nil:
		return Info{}, fmt.Errorf("tensor %q: missing shape", name)
	case ri.DataOffsets == nil:
		return Info{}, fmt.Errorf("tensor %q: missing data_offsets", name)
	}
	dt := DType(*ri.DType)
	size := dt.Size()
	if size == 0 {
		return Info{}, fmt.Errorf("tensor %q: unknown dtype %q", name, *ri.DType)
	}
	shape := make([]int, len(*ri.Shape))
	elems := int64(1)
	for i, d := range *ri.Shape {
		if d < 0 {
			return Info{}, fmt.Errorf("tensor %q: negative dimension in shape %v", name, *ri.Shape)
		}
		shape[i] = int(d)
		if d != 0 && elems > math.MaxInt64/int64(size)/d {
			// Even if a later dimension is 0 such a shape is nonsense.
			return Info{}, fmt.Errorf("tensor %q: shape %v overflows", name, *ri.Shape)
		}
		elems *= d
	}
	if uint64(elems) > uint64(math.MaxInt) { // 32-bit platforms
		return Info{}, fmt.Errorf("tensor %q: shape %v overflows", name, *ri.Shape)
	}
	off := *ri.DataOffsets
	if len(off) != 2 {
		return Info{}, fmt.Errorf("tensor %q: data_offsets %v is not [begin, end]", name, off)
	}
	begin, end := off[0], off[1]
	switch {
	case begin < 0 || end < 0:
		return Info{}, fmt.Errorf("tensor %q: negative data_offsets %v", name, off)
	case begin > end:
		return Info{}, fmt.Errorf("tensor %q: data_offsets %v: begin after end", name, off)
	case end > dataLen:
		return Info{}, fmt.Errorf("tensor %q: data_offsets %v run past the data section (%d bytes)", name, off, dataLen)
	}
	if want := elems * int64(size); end-begin != want {
		return Info{}, fmt.Errorf("tensor %q: holds %d bytes, want %d (shape %v of %s, %d bytes each)",
			name, end-begin, want, shape, dt, size)
	}
	return Info{Name: name, DType: dt, Shape: shape, Begin: begin, End: end}, nil
}

// checkOverlap reports two tensors whose byte ranges intersect. Gaps between
// tensors are allowed; empty tensors overlap nothing.
func checkOverlap(infos []Info) error {
	byBegin := make([]Info, 0, len(infos))
	for _, in := range infos {
		if in.End > in.Begin {
			byBegin = append(byBegin, in)
		}
	}
	sort.Slice(byBegin, func(i, j int) bool {
		if byBegin[i].Begin != byBegin[j].Begin {
			return byBegin[i].Begin < byBegin[j].Begin
		}
		return byBegin[i].Name < byBegin[j].Name
	})
	for i := 1; i < len(byBegin); i++ {
		a, b := byBegin[i-1], byBegin[i]
		if a.End > b.Begin {
			return fmt.Errorf("tensors %q [%d %d] and %q [%d %d] overlap", a.Name, a.Begin, a.End, b.Name, b.Begin, b.End)
		}
	}
	return nil
}
