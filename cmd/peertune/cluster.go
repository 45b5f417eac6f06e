package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/node"
	"github.com/peertune/peertune/trainer"
)

// clusterOptions are the flags of a multi-node job. A process joins a cluster
// when --join or --bind is given (or when `--nodes N` started it).
type clusterOptions struct {
	nodes             int    // --nodes: start this many local peer processes
	join              string // --join host:port[,host:port]: seeds
	bind              string // --bind ip:port: gossip address
	advertise         string // --advertise ip:port: what peers dial for gossip
	collectiveBind    string // --collective-bind ip:port: ring listener
	secretFile        string // --secret-file
	minNodes          int
	worldSize         int
	rendezvousTimeout time.Duration
	nodeName          string // --node-name (unique per process)
}

func (o *clusterOptions) distributed() bool { return o.join != "" || o.bind != "" }

// jobHash identifies what must agree across nodes: every training setting,
// but not where rank 0 writes its outputs.
func jobHash(cfg trainer.Config) string {
	cfg.Out = ""
	raw, _ := json.Marshal(cfg) // plain fields: cannot fail
	return node.HashJobConfig(raw)
}

// splitHostPort parses ip:port for a flag, naming the flag on error.
func splitHostPort(flag, s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("--%s %q: want ip:port: %w", flag, s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--%s %q: bad port", flag, s)
	}
	return host, port, nil
}

// runDistributed joins the cluster, agrees on a world by rendezvous, connects
// the ring of that world and trains as its rank. Rank 0 writes the outputs.
func runDistributed(ctx context.Context, g *globalOptions, co clusterOptions, cfg trainer.Config, jio trainer.JobIO, stdoutRank0 func(rank int) bool) error {
	log := g.log
	secret, err := node.ReadSecret(co.secretFile, os.Getenv)
	if err != nil {
		return err
	}
	ncfg := node.DefaultConfig()
	if co.nodeName != "" {
		ncfg.Name = co.nodeName
	}
	bindHost, bindPort, err := splitHostPort("bind", co.bind)
	if err != nil {
		return err
	}
	ncfg.BindAddr, ncfg.BindPort = bindHost, bindPort
	advHost := bindHost
	if co.advertise != "" {
		if advHost, ncfg.AdvertisePort, err = splitHostPort("advertise", co.advertise); err != nil {
			return err
		}
		ncfg.AdvertiseAddr = advHost
	}
	if ip := net.ParseIP(advHost); ip != nil && ip.IsUnspecified() || advHost == "" {
		return fmt.Errorf("--bind %s listens on every interface: pass --advertise ip:port with the address peers should dial", co.bind)
	}
	// The ring listens before anyone can learn its address, on the port the
	// kernel picks unless --collective-bind says otherwise.
	ringBind := net.JoinHostPort(bindHost, "0")
	if co.collectiveBind != "" {
		ringBind = co.collectiveBind
	}
	ln, err := net.Listen("tcp", ringBind)
	if err != nil {
		return fmt.Errorf("--collective-bind %s: %w", ringBind, err)
	}
	ringPort := ln.Addr().(*net.TCPAddr).Port
	ncfg.Endpoint = net.JoinHostPort(advHost, strconv.Itoa(ringPort))
	if co.join != "" {
		ncfg.Seeds = strings.Split(co.join, ",")
	}
	ncfg.SecretKey = node.DeriveKey(secret)
	ncfg.JobHash = jobHash(cfg)
	ncfg.Device = "cpu"
	ncfg.MinNodes, ncfg.WorldSize = co.minNodes, co.worldSize
	if co.rendezvousTimeout > 0 {
		ncfg.RendezvousTimeout = co.rendezvousTimeout
	}
	n, err := node.Start(ctx, ncfg, log.Named("node"))
	if err != nil {
		ln.Close()
		return err
	}
	defer func() {
		// Leave gracefully so that peers see it at once instead of waiting
		// for failure detection.
		if err := n.Leave(2 * time.Second); err != nil {
			log.Debug("leave", zap.Error(err))
		}
		n.Shutdown()
	}()
	log.Info("joined the cluster", zap.String("node", n.ID()), zap.String("gossip", n.Addr()), zap.String("collective", ncfg.Endpoint))
	world, err := node.Rendezvous(ctx, n, nil, ncfg.RendezvousOptions())
	if err != nil {
		ln.Close()
		return fmt.Errorf("rendezvous: %w", err)
	}
	peers := make([]string, world.Size)
	for i, p := range world.Peers {
		peers[i] = p.Endpoint
	}
	log.Info("world formed", zap.Uint64("epoch", world.Epoch), zap.Int("rank", world.Rank), zap.Int("size", world.Size), zap.Strings("peers", peers))
	rcfg := ring.DefaultConfig()
	rcfg.Rank, rcfg.Size, rcfg.Epoch, rcfg.Peers = world.Rank, world.Size, world.Epoch, peers
	rcfg.Listener, rcfg.Secret = ln, secret
	comm, err := ring.New(ctx, rcfg, log.Named("ring"))
	if err != nil {
		return fmt.Errorf("connect the ring: %w", err)
	}
	defer comm.Close()
	if err := n.UpdateMeta(func(m *node.Meta) { m.State = node.StateTraining }); err != nil {
		return err
	}
	if !stdoutRank0(world.Rank) {
		jio.Stdout = nil
	}
	jio.OnStep = chainStep(jio.OnStep, func(st trainer.StepStats) {
		// Gossip progress so that `peertune status` and peers see stragglers.
		_ = n.UpdateMeta(func(m *node.Meta) {
			m.Step, m.StepMillis = uint64(st.Step), uint32(st.Elapsed.Milliseconds())
		})
	})
	be, err := newCPUBackend(g)
	if err != nil {
		return err
	}
	var c collective.Communicator = comm
	sum, err := trainer.RunJob(ctx, cfg, be, c, log, jio)
	if err != nil {
		return err
	}
	log.Info("done", zap.Int("rank", world.Rank), zap.Int("steps", sum.Steps), zap.Float64("seconds", sum.Seconds))
	return nil
}

func chainStep(a, b func(trainer.StepStats)) func(trainer.StepStats) {
	return func(st trainer.StepStats) {
		if a != nil {
			a(st)
		}
		b(st)
	}
}
