package node

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

// State is where a node is in its life, as its peers see it through gossip.
type State uint8

const (
	// StateUnknown is the zero value: metadata that did not decode, or a peer
	// from a newer version with a state we do not know. Never eligible.
	StateUnknown State = iota
	// StateJoining: the process is up and gossiping but not yet ready to train
	// (loading the model, building the data order). Not counted by rendezvous.
	StateJoining
	// StateReady: waiting in rendezvous for a world.
	StateReady
	// StateTraining: member of a committed world, stepping.
	StateTraining
	// StateLeaving: going away for good (set by Leave only, and kept). Never
	// eligible, and not counted in the majority of a last world: the
	// process promised not to train in the job again.
	StateLeaving
	// StateObserver: a process that only watches the cluster (`peertune
	// status`). Never eligible, never a straggler, never asks for a rebuild.
	// Last, so that the wire values of the states above do not change; an
	// older peer decodes it as unknown, which is never eligible either.
	StateObserver
)

func (s State) String() string {
	switch s {
	case StateJoining:
		return "joining"
	case StateReady:
		return "ready"
	case StateTraining:
		return "training"
	case StateLeaving:
		return "leaving"
	case StateObserver:
		return "observer"
	default:
		return fmt.Sprintf("unknown(%d)", uint8(s))
	}
}

// Field length limits. They are chosen so that a Meta with every string at
// its limit and every number at its largest still encodes under
// memberlist.MetaMaxSize (512 bytes); TestMetaWorstCaseFits holds us to it.
const (
	// MaxIDLen bounds the node name: hostname (cut to 64) + pid + suffix fits.
	MaxIDLen = 128
	// MaxEndpointLen bounds the collective host:port. An IPv6 literal with
	// brackets and port is 47 bytes; the rest is room for a DNS name.
	MaxEndpointLen = 96
	// MaxDeviceLen bounds the device summary ("cuda:0 NVIDIA H100 80GB x8").
	MaxDeviceLen = 64
	// MaxJobHashLen: a hex SHA-256 is 64 characters.
	MaxJobHashLen = 64
)

// Meta is what a node tells every other node about itself. It rides in
// memberlist's alive messages, so every change is gossiped to all nodes and
// the encoded form must stay under memberlist.MetaMaxSize (512 bytes).
//
// The msgpack keys are short on purpose (the 512-byte budget) and encoded as
// a map, not an array, so that a newer version can add fields and an older
// one skips the keys it does not know.
type Meta struct {
	// ID is the node's unique name, the same as its memberlist name.
	ID string `msgpack:"id"`
	// Endpoint is the host:port the collective (ring / NCCL bootstrap)
	// listens on. Distinct from the gossip address.
	Endpoint string `msgpack:"ep,omitempty"`
	// Device is a short human summary of the accelerator, e.g. "cpu" or
	// "cuda H100x8".
	Device string `msgpack:"dev,omitempty"`
	// Budget is the memory budget in bytes the node will train within;
	// 0 means none known.
	Budget uint64 `msgpack:"bud,omitempty"`
	// NCCL says the node can run the collective through NCCL (a GPU and
	// libnccl), so a leader makes an NCCL id only for worlds whose every
	// member can use it (an unused id leaves NCCL's bootstrap thread
	// listening for ever). Older code does not set it: such a member gets
	// the id from rank 0 over the ring if the world uses NCCL after all.
	NCCL bool `msgpack:"nccl,omitempty"`
	// JobHash identifies the job configuration (hex of a hash over the
	// canonical config). Nodes with different hashes never share a world.
	JobHash string `msgpack:"jh,omitempty"`
	// State is the node's life-cycle state.
	State State `msgpack:"st"`
	// Step is the last optimizer step this node completed.
	Step uint64 `msgpack:"step,omitempty"`
	// StepMillis is the wall time of that step, so stragglers can be named.
	StepMillis uint32 `msgpack:"sms,omitempty"`
	// Epoch is the epoch of the last world this node committed to (0: none).
	Epoch uint64 `msgpack:"epoch,omitempty"`
	// Inc is the incarnation: a random non-zero number Start picks once
	// per process and that never changes. ID names a node, and a name can
	// come back as a new process (a restart, a Slurm requeue with the same
	// --node-name); ID and Inc together name one process, which is what the
	// majority of a last world is made of (see lastQuorum). 0 means
	// unknown: metadata of older code, which has no incarnation.
	Inc uint64 `msgpack:"inc,omitempty"`
	// Done says the job is complete: this node took every step, evaluated,
	// and every rank of its world confirmed the final outputs written. A
	// node still waiting to join has nothing left to do and must not start
	// the job again on its own.
	Done bool `msgpack:"done,omitempty"`
}

// Validate checks the field lengths that keep Meta under the size limit.
func (m *Meta) Validate() error {
	switch {
	case m.ID == "":
		return fmt.Errorf("meta: empty node id")
	case len(m.ID) > MaxIDLen:
		return fmt.Errorf("meta: node id is %d bytes, limit %d", len(m.ID), MaxIDLen)
	case len(m.Endpoint) > MaxEndpointLen:
		return fmt.Errorf("meta: endpoint %q is %d bytes, limit %d", m.Endpoint, len(m.Endpoint), MaxEndpointLen)
	case len(m.Device) > MaxDeviceLen:
		return fmt.Errorf("meta: device %q is %d bytes, limit %d", m.Device, len(m.Device), MaxDeviceLen)
	case len(m.JobHash) > MaxJobHashLen:
		return fmt.Errorf("meta: job hash is %d bytes, limit %d", len(m.JobHash), MaxJobHashLen)
	}
	return nil
}

// Encode returns the msgpack form. It fails if a field is over its limit or
// the whole is over memberlist.MetaMaxSize: memberlist panics on oversized
// metadata, so we must never hand it one.
func (m *Meta) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("meta: encode: %w", err)
	}
	if buf.Len() > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("meta: encoded size %d exceeds memberlist's limit of %d bytes", buf.Len(), memberlist.MetaMaxSize)
	}
	return buf.Bytes(), nil
}

// DecodeMeta parses metadata gossiped by a peer. Unknown keys are ignored
// (a newer peer); a missing key leaves the zero value.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("meta: empty")
	}
	if len(b) > memberlist.MetaMaxSize {
		return m, fmt.Errorf("meta: %d bytes exceeds memberlist's limit of %d", len(b), memberlist.MetaMaxSize)
	}
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("meta: decode: %w", err)
	}
	return m, nil
}
