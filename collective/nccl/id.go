package nccl

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MarshalID encodes a unique id for the rendezvous as msgpack (a bin8 of
// IDBytes bytes), the encoding node metadata uses.
func MarshalID(id [IDBytes]byte) ([]byte, error) {
	b, err := msgpack.Marshal(id[:])
	if err != nil {
		return nil, fmt.Errorf("nccl: marshal unique id: %w", err)
	}
	return b, nil
}

// UnmarshalID decodes what MarshalID encoded. Anything else (another
// length, a msgpack type other than bin, trailing bytes) is an error: a wrong id
// would make NCCL's bootstrap connect to a stranger or hang.
func UnmarshalID(b []byte) ([IDBytes]byte, error) {
	var id [IDBytes]byte
	if len(b) == 0 || !msgpcode.IsBin(b[0]) {
		return id, fmt.Errorf("nccl: unmarshal unique id: not a msgpack bin (% x)", b[:min(len(b), 4)])
	}
	var raw []byte
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Decode(&raw); err != nil {
		return id, fmt.Errorf("nccl: unmarshal unique id: %w", err)
	}
	if r.Len() != 0 {
		return id, fmt.Errorf("nccl: unmarshal unique id: %d trailing bytes", r.Len())
	}
	if len(raw) != IDBytes {
		return id, fmt.Errorf("nccl: unmarshal unique id: %d bytes, want %d", len(raw), IDBytes)
	}
	copy(id[:], raw)
	return id, nil
}
