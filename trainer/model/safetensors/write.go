package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Tensor is a named float32 tensor to write. Data is row-major with
// len(Data) == product(Shape) (1 for an empty Shape, a scalar).
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Write stores tensors at path as one safetensors file with every tensor in
// dtype dt (F32, F16 or BF16; F16 and BF16 round to nearest, ties to even,
// with IEEE overflow to ±Inf) and the given string metadata (may be nil).
//
// The write is atomic: the bytes go to a temporary file in the same
// directory, which is fsynced, renamed over path, and the directory fsynced.
// A crash leaves either the old file or the new one, never a torn one.
func Write(path string, tensors []Tensor, dt DType, metadata map[string]string) (err error) {
	if err := validate(tensors, dt, metadata); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err = encode(w, tensors, dt, metadata); err != nil {
		return err
	}
	if err = w.Flush(); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Encode writes tensors as a safetensors stream to w (see Write for dt and
// metadata). The output is deterministic: tensors are laid out in name order
// and the header's keys are sorted.
func Encode(w io.Writer, tensors []Tensor, dt DType, metadata map[string]string) error {
	if err := validate(tensors, dt, metadata); err != nil {
		return err
	}
	return encode(w, tensors, dt, metadata)
}

func validate(tensors []Tensor, dt DType, metadata map[string]string) error {
	if !dt.isWritable() {
		return fmt.Errorf("cannot write dtype %q (want F32, F16 or BF16)", dt)
	}
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		switch {
		case t.Name == "":
			return errors.New("tensor with an empty name")
		case t.Name == metadataKey:
			return fmt.Errorf("tensor name %q is reserved", metadataKey)
		case !utf8.ValidString(t.Name):
			return fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
		case seen[t.Name]:
			return fmt.Errorf("duplicate tensor %q", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
			if d != 0 && n > math.MaxInt/d {
				return fmt.Errorf("tensor %q: shape %v overflows", t.Name, t.Shape)
			}
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("tensor %q: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, len(t.Data))
		}
	}
	for k, v := range metadata {
		if k == "" {
			return errors.New("metadata with an empty key")
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("metadata %q: not valid UTF-8", k)
		}
	}
	return nil
}

// headerEntry is one tensor's header entry. Shape is never nil so a scalar
// writes "shape":[] rather than null.
type headerEntry struct {
	DType       DType    `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

func encode(w io.Writer, tensors []Tensor, dt DType, metadata map[string]string) error {
	order := slices.Clone(tensors)
	slices.SortFunc(order, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })

	size := int64(dt.Size())
	header := make(map[string]any, len(order)+1)
	var off int64
	for _, t := range order {
		n := int64(len(t.Data)) * size
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = headerEntry{DType: dt, Shape: shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	if len(metadata) > 0 {
		header[metadataKey] = metadata
	}
	js, err := json.Marshal(header) // map keys come out sorted
	if err != nil {
		return err
	}
	// Pad with spaces so the data section starts 8-byte aligned, as the
	// reference writer does.
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, strings.Repeat(" ", pad)...)
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}

	buf := make([]byte, 0, 64<<10)
	le := binary.LittleEndian
	for _, t := range order {
		for _, v := range t.Data {
			switch dt {
			case F32:
				buf = le.AppendUint32(buf, math.Float32bits(v))
			case F16:
				buf = le.AppendUint16(buf, f32ToF16(v))
			case BF16:
				buf = le.AppendUint16(buf, f32ToBF16(v))
			}
			if len(buf) >= cap(buf)-8 {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	if len(buf) > 0 {
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}
