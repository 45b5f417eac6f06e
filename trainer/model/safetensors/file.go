package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// ErrNotFound is wrapped by the error for a tensor a file does not hold:
// errors.Is(err, ErrNotFound) tells "absent" (say, lm_head.weight in a model
// with tied embeddings) from a broken file.
var ErrNotFound = errors.New("not found")

// File is an open safetensors file whose header has been validated. Tensor
// data is read on demand, one tensor at a time, so loading a model needs
// memory for the converted tensors only. A File is safe for concurrent use.
type File struct {
	Path     string            // as given to Open or Parse; prefixes every error
	Metadata map[string]string // the header's __metadata__; nil when absent

	hdr   *Header
	index map[string]int // name -> position in hdr.Tensors
	r     io.ReaderAt
	c     io.Closer // nil for Parse
}

// Open opens a safetensors file and validates its whole header (see
// ParseHeader) before returning. The caller must Close it.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError already names the file
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	f, err := newFile(path, fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, err
	}
	f.c = fh
	return f, nil
}

// Parse is Open for a file already in memory; path only names it in errors.
// The File keeps data (without copying it); Close is a no-op.
func Parse(path string, data []byte) (*File, error) {
	return newFile(path, bytes.NewReader(data), int64(len(data)))
}

func newFile(path string, r io.ReaderAt, size int64) (*File, error) {
	h, err := readHeader(r, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := &File{Path: path, Metadata: h.Metadata, hdr: h, r: r, index: make(map[string]int, len(h.Tensors))}
	for i, t := range h.Tensors {
		f.index[t.Name] = i
	}
	return f, nil
}

// Close releases the underlying file.
func (f *File) Close() error {
	if f.c == nil {
		return nil
	}
	return f.c.Close()
}

// Names lists the tensors, sorted.
func (f *File) Names() []string {
	names := make([]string, len(f.hdr.Tensors))
	for i, t := range f.hdr.Tensors {
		names[i] = t.Name
	}
	return names
}

// Info describes the named tensor. The caller owns the returned Shape.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.index[name]
	if !ok {
		return Info{}, false
	}
	in := f.hdr.Tensors[i]
	in.Shape = slices.Clone(in.Shape)
	return in, true
}

// DataStart is the file offset of the data section (Info offsets are
// relative to it).
func (f *File) DataStart() int64 { return f.hdr.DataStart }

// lookup finds a tensor and, when shape is given, checks it matches exactly.
func (f *File) lookup(name string, shape []int) (Info, error) {
	i, ok := f.index[name]
	if !ok {
		return Info{}, fmt.Errorf("%s: tensor %q %w", f.Path, name, ErrNotFound)
	}
	in := f.hdr.Tensors[i]
	if len(shape) > 0 && !slices.Equal(in.Shape, shape) {
		return Info{}, fmt.Errorf("%s: tensor %q has shape %v, want %v", f.Path, name, in.Shape, shape)
	}
	return in, nil
}

// chunkBytes bounds the staging buffer of a read, so converting a tensor
// costs little memory beyond its result.
const chunkBytes = 1 << 20

// each reads the tensor's bytes in chunks of whole elements and hands them to
// fn along with the index of the chunk's first element.
func (f *File) each(in Info, fn func(first int, b []byte)) error {
	size := int64(in.DType.Size())
	total := in.End - in.Begin
	buf := make([]byte, min(total, chunkBytes/size*size))
	for done := int64(0); done < total; {
		b := buf[:min(int64(len(buf)), total-done)]
		if k, err := f.r.ReadAt(b, f.hdr.DataStart+in.Begin+done); k < len(b) {
			return fmt.Errorf("%s: tensor %q: read: %w", f.Path, in.Name, err)
		}
		fn(int(done/size), b)
		done += int64(len(b))
	}
	return nil
}

// Float32 reads a F32, F16, BF16 or F64 tensor as float32 (F16 and BF16
// widen exactly; F64 rounds). When shape is given the tensor's shape must
// equal it exactly. The caller owns the result.
func (f *File) Float32(name string, shape ...int) ([]float32, error) {
	in, err := f.lookup(name, shape)
	if err != nil {
		return nil, err
	}
	out := make([]float32, in.NumElements())
	if err := f.float32Into(out, in); err != nil {
		return nil, err
	}
	return out, nil
}

// Float32Into is Float32 into dst, whose length must be the tensor's number
// of elements. Loaders that copy a model tensor by tensor reuse one dst, so
// reading leaves no garbage the size of a tensor behind each call (garbage
// that, collected late, shows up as resident memory).
func (f *File) Float32Into(dst []float32, name string, shape ...int) error {
	in, err := f.lookup(name, shape)
	if err != nil {
		return err
	}
	if n := in.NumElements(); len(dst) != n {
		return fmt.Errorf("%s: tensor %q has %d elements, destination %d", f.Path, name, n, len(dst))
	}
	return f.float32Into(dst, in)
}

func (f *File) float32Into(out []float32, in Info) error {
	if !in.DType.isFloat() {
		return fmt.Errorf("%s: tensor %q is %s, not a float dtype", f.Path, in.Name, in.DType)
	}
	le := binary.LittleEndian
	return f.each(in, func(first int, b []byte) {
		o := out[first:]
		switch in.DType {
		case F32:
			for i := range len(b) / 4 {
				o[i] = math.Float32frombits(le.Uint32(b[4*i:]))
			}
		case F16:
			for i := range len(b) / 2 {
				o[i] = f16ToF32(le.Uint16(b[2*i:]))
			}
		case BF16:
			for i := range len(b) / 2 {
				o[i] = bf16ToF32(le.Uint16(b[2*i:]))
			}
		case F64:
			for i := range len(b) / 8 {
				o[i] = float32(math.Float64frombits(le.Uint64(b[8*i:])))
			}
		}
	})
}

// Int64 reads an I64 or I32 tensor (token ids, labels) as int64. When shape
// is given the tensor's shape must equal it exactly. The caller owns the result.
func (f *File) Int64(name string, shape ...int) ([]int64, error) {
	in, err := f.lookup(name, shape)
	if err != nil {
		return nil, err
	}
	if !in.DType.isInt() {
		return nil, fmt.Errorf("%s: tensor %q is %s, not I32 or I64", f.Path, name, in.DType)
	}
	out := make([]int64, in.NumElements())
	le := binary.LittleEndian
	err = f.each(in, func(first int, b []byte) {
		o := out[first:]
		if in.DType == I64 {
			for i := range len(b) / 8 {
				o[i] = int64(le.Uint64(b[8*i:]))
			}
			return
		}
		for i := range len(b) / 4 {
			o[i] = int64(int32(le.Uint32(b[4*i:])))
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
