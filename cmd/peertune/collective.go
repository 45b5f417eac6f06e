package main

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/nccl"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cuda"
	"github.com/peertune/peertune/node"
)

// worldComm picks the communicator that carries the gradients of a world
// (--collective): NCCL for GPU buffers when libnccl is there, otherwise the
// TCP ring, through host memory when the buffers live on a GPU. The ring is
// always formed first: it is authenticated, and it hands NCCL's unique id from
// rank 0 to every rank.
func worldComm(ctx context.Context, choice string, be kernels.Backend, rc *ring.Comm, w node.World, log *zap.Logger) (collective.Communicator, error) {
	gpuBe, onGPU := be.(*cuda.Backend)
	useNCCL := false
	switch choice {
	case "ring":
	case "nccl":
		if !onGPU {
			return nil, fmt.Errorf("--collective nccl needs --device cuda (backend is %s)", be.Name())
		}
		useNCCL = true
	case "auto", "":
		if onGPU {
			if _, err := nccl.Default(); err != nil {
				log.Info("collective: TCP ring through host memory (NCCL not usable)", zap.Error(err))
			} else {
				useNCCL = true
			}
		}
	default:
		return nil, fmt.Errorf("--collective %q: want auto, ring or nccl", choice)
	}
	if !useNCCL {
		if onGPU {
			return &collective.Staged{Comm: rc, Backend: be}, nil
		}
		return rc, nil
	}
	var id [nccl.IDBytes]byte
	if w.Rank == 0 {
		var err error
		if id, err = nccl.NewUniqueID(); err != nil {
			return nil, err
		}
	}
	// 16 bits per float32 word: exact, so the id arrives bit for bit.
	words := make([]float32, nccl.IDBytes/2)
	for i := range words {
		words[i] = float32(uint16(id[2*i]) | uint16(id[2*i+1])<<8)
	}
	if err := rc.BroadcastFloat32(ctx, words, 0); err != nil {
		return nil, fmt.Errorf("hand out the NCCL id: %w", err)
	}
	for i, v := range words {
		u := uint16(v)
		id[2*i], id[2*i+1] = byte(u), byte(u>>8)
	}
	cfg := nccl.DefaultConfig()
	cfg.Rank, cfg.Size, cfg.Epoch, cfg.ID = w.Rank, w.Size, w.Epoch, id
	cfg.Device = gpuBe.Device().Ordinal
	cfg.Context, cfg.Stream = gpuBe.Handles()
	c, err := nccl.New(ctx, cfg, log.Named("nccl"))
	if err != nil {
		return nil, err
	}
	log.Info("collective: NCCL", zap.Int("rank", w.Rank), zap.Int("size", w.Size))
	return c, nil
}
