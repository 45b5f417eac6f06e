package ring

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// Data frames. Every segment travels as a fixed 40-byte little-endian header
// followed by the segment's float32s, little-endian:
//
//	0  uint16 magic 0x5054 ("PT")
//	2  uint8  kind (1 all-reduce, 2 broadcast)
//	3  uint8  op (collective.Op) for all-reduce, 0 for broadcast
//	4  uint64 seq: the communicator's operation number
//	12 uint64 total: the buffer length in elements
//	20 uint32 step (all-reduce) or root (broadcast)
//	24 uint32 chunk
//	28 uint64 off: the segment's first element in the buffer
//	36 uint32 n: the segment's element count; n*4 payload bytes follow
//
// The receiver knows exactly which frame comes next (the schedule is a pure
// function), so it compares the whole header with the one it expects: ranks
// that disagree on the buffer length, the op, the root or the sequence of
// collectives fail with ErrDesync instead of silently mis-summing.
const (
	frameMagic    = 0x5054
	headerLen     = 40
	kindAllReduce = 1
	kindBroadcast = 2
)

type header struct {
	kind, op    uint8
	seq, total  uint64
	step, chunk uint32
	off         uint64
	n           uint32
}

func (h header) String() string {
	return fmt.Sprintf("{kind %d op %d seq %d total %d step %d chunk %d off %d n %d}",
		h.kind, h.op, h.seq, h.total, h.step, h.chunk, h.off, h.n)
}

func (h header) put(b *[headerLen]byte) {
	le := binary.LittleEndian
	le.PutUint16(b[0:], frameMagic)
	b[2], b[3] = h.kind, h.op
	le.PutUint64(b[4:], h.seq)
	le.PutUint64(b[12:], h.total)
	le.PutUint32(b[20:], h.step)
	le.PutUint32(b[24:], h.chunk)
	le.PutUint64(b[28:], h.off)
	le.PutUint32(b[36:], h.n)
}

func parseHeader(b *[headerLen]byte) (header, error) {
	le := binary.LittleEndian
	if m := le.Uint16(b[0:]); m != frameMagic {
		return header{}, fmt.Errorf("bad frame magic %#04x", m)
	}
	return header{
		kind: b[2], op: b[3],
		seq: le.Uint64(b[4:]), total: le.Uint64(b[12:]),
		step: le.Uint32(b[20:]), chunk: le.Uint32(b[24:]),
		off: le.Uint64(b[28:]), n: le.Uint32(b[36:]),
	}, nil
}

// hostIsLittleEndian decides between the zero-copy path (the float32 slice's
// own memory is the wire format) and the portable encode/decode path.
func hostIsLittleEndian() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 1
}

// asBytes views f's memory as bytes (no copy). Only the little-endian fast
// path uses it, where these bytes are exactly the wire encoding.
func asBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
}

// encodeLE writes src into dst (len 4*len(src)) as little-endian float32s.
func encodeLE(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// decodeLE overwrites dst with the little-endian float32s in src.
func decodeLE(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// addLE adds the little-endian float32s in src into dst.
func addLE(dst []float32, src []byte) {
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// add adds src into dst (the fast path's reduction).
func add(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}
