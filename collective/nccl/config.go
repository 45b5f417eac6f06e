package nccl

import (
	"errors"
	"fmt"
	"time"
)

// Config describes one rank of one NCCL communicator. Start from
// DefaultConfig and set the identity fields (Rank, Size, ID, Device,
// Stream); the timeouts have defaults.
type Config struct {
	// Rank is this rank's index in [0, Size).
	Rank int
	// Size is the number of ranks.
	Size int
	// Epoch identifies the world (node.World.Epoch); only logged.
	Epoch uint64
	// ID is the communicator's unique id: rank 0 makes it with NewUniqueID
	// and the rendezvous hands it to every rank (MarshalID/UnmarshalID carry
	// it in msgpack). A new world needs a new id.
	ID [IDBytes]byte
	// Device is the CUDA device ordinal this rank uses.
	Device int
	// Context, when not 0, is the CUcontext the CUDA backend runs in; it must
	// belong to Device. 0 means Device's primary context, which New retains
	// (the CUDA runtime inside NCCL uses primary contexts too, so a backend
	// that also uses the primary context shares everything with NCCL).
	Context uintptr
	// Stream is the CUstream (cudaStream_t) the collectives are enqueued on;
	// 0 is the legacy default stream of Context. Use the stream the backend
	// computes the gradients on: then no extra synchronisation is needed.
	Stream uintptr

	// InitTimeout bounds communicator creation (New, Shrink): NCCL connects
	// to every peer, so a rank that never shows up would otherwise hold the
	// others forever.
	InitTimeout time.Duration
	// OpTimeout, when positive, bounds every collective on top of its ctx.
	OpTimeout time.Duration
	// CloseTimeout bounds each teardown step (ncclCommFinalize's flush,
	// ncclCommAbort), so Close never blocks forever even if NCCL does.
	CloseTimeout time.Duration

	// Library is the NCCL to use; nil means Default().
	Library *Library
}

// DefaultConfig returns a Config with the timeouts at their defaults and the
// identity fields empty.
func DefaultConfig() Config {
	return Config{
		// Like the ring's ConnectTimeout, plus time for NCCL's topology
		// detection and connection setup, which takes seconds at scale.
		InitTimeout: 2 * time.Minute,
		// A backstop against a peer that is alive but stuck, which no error
		// reveals; generous because the fastest rank waits inside the
		// collective for the slowest rank's whole forward/backward pass.
		OpTimeout: 10 * time.Minute,
		// Finalize of an idle communicator takes milliseconds; abort
		// normally too. Ten seconds tolerates a loaded host and still lets
		// a job that lost its network shut down promptly.
		CloseTimeout: 10 * time.Second,
	}
}

// check reports the first problem with c, as an error naming the field.
func (c *Config) check() error {
	switch {
	case c.Size < 1:
		return fmt.Errorf("nccl: config: Size %d < 1", c.Size)
	case c.Rank < 0 || c.Rank >= c.Size:
		return fmt.Errorf("nccl: config: Rank %d out of range [0, %d)", c.Rank, c.Size)
	case c.Device < 0:
		return fmt.Errorf("nccl: config: Device %d < 0", c.Device)
	case c.ID == [IDBytes]byte{}:
		return errors.New("nccl: config: ID is all zero: rank 0 makes it with NewUniqueID and the rendezvous hands it out")
	case c.InitTimeout <= 0 || c.CloseTimeout <= 0:
		return fmt.Errorf("nccl: config: InitTimeout %v and CloseTimeout %v must be positive (start from DefaultConfig)",
			c.InitTimeout, c.CloseTimeout)
	case c.OpTimeout < 0:
		return fmt.Errorf("nccl: config: negative OpTimeout %v", c.OpTimeout)
	}
	return nil
}

// configHeader says which nccl.h a library of version v expects an
// ncclConfig_t from: the size and version fields that header's
// NCCL_CONFIG_INITIALIZER would write. From 2.17 on it is our declared
// layout, ncclConfig_v21700 (newer libraries default every field past it);
// 2.14-2.16 know only ncclConfig_v21400, which ends after blocking.
func configHeader(v Version) (size uintptr, header Version) {
	if v.AtLeast(config2_17) {
		return configSize, config2_17
	}
	return configSize2_14, v
}
