package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/node"
	"github.com/peertune/peertune/trainer"
	"github.com/peertune/peertune/trainer/checkpoint"
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
	allowMinority     bool   // --allow-minority: the operator overrides the majority rule
	ledger            string // --ledger DIR: record the samples each rank computed per step (tests)
	device            string // --device auto|cpu|cuda
	collective        string // --collective auto|ring|nccl
}

func (o *clusterOptions) distributed() bool { return o.join != "" || o.bind != "" }

// jobHash identifies what must agree across nodes: every training setting
// (but not where rank 0 writes its outputs), the base model's weights, so
// that a node whose copy of the model differs is refused, and the precision
// the node resolved --precision auto to: a bf16 GPU and a CPU (or an older
// GPU) would compute different gradients for the same step, so they do not
// train together unless --precision makes them agree.
func jobHash(cfg trainer.Config, src trainer.ModelSource, precision kernels.DType) string {
	return node.HashJobConfig(append(append(cfg.CanonicalJSON(), src.Hash...), "precision="+precision.String()...))
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

// runDistributed joins the cluster and trains as one rank of a world that
// may change: when a peer dies (the ring fails) or a node joins (the ranks
// vote at a step boundary), the survivors form a new world by rendezvous,
// make its communicator (shrinking the old NCCL one where they can; see
// commGlue), agree on the most advanced state (SyncState) and go on from
// memory; at most the step in flight is lost. Rank 0 of the last world
// writes the outputs.
func runDistributed(ctx context.Context, g *globalOptions, co clusterOptions, cfg trainer.Config, be kernels.Backend, jio trainer.JobIO,
	device string, budget uint64, stdoutRank0 func(rank int) bool) error {
	log := g.log
	secret, err := node.ReadSecret(co.secretFile, os.Getenv)
	if err != nil {
		return err
	}
	// Before loading anything: a --collective that cannot work fails now.
	glue, err := newCommGlue(co.collective, be, log)
	if err != nil {
		return err
	}
	// Load the model and data first: a node that joins a running job brings
	// its own copy of the base model, verified by the job hash below.
	stdout := jio.Stdout
	jio.Stdout = nil
	sess, err := trainer.NewSession(cfg, be, log, jio)
	if err != nil {
		return err
	}
	defer sess.Close()
	// Deferred after sess.Close so that it runs first: a kept NCCL
	// communicator may still have a kernel on the session's stream.
	defer glue.close()
	// Every node may resume from its own --out; the new world then adopts
	// the most advanced state (SyncState), so one copy of the checkpoint,
	// on any node, is enough.
	if err := sess.StartOrResume(); err != nil {
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
	// The ring listens on one port for the whole job (it is gossiped in the
	// metadata); every world re-listens on it.
	ringBind := net.JoinHostPort(bindHost, "0")
	if co.collectiveBind != "" {
		ringBind = co.collectiveBind
	}
	ln, err := net.Listen("tcp", ringBind)
	if err != nil {
		return fmt.Errorf("--collective-bind %s: %w", ringBind, err)
	}
	ringAddr := ln.Addr().String()
	ncfg.Endpoint = net.JoinHostPort(advHost, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	if co.join != "" {
		ncfg.Seeds = strings.Split(co.join, ",")
	}
	ncfg.SecretKey = node.DeriveKey(secret)
	ncfg.JobHash = jobHash(cfg, sess.Src, sess.Model.Opts.Precision)
	log.Info("job", zap.String("hash", node.ShortHash(ncfg.JobHash)), zap.Stringer("precision", sess.Model.Opts.Precision))
	ncfg.Device, ncfg.Budget, ncfg.NCCL = device, budget, glue.nccl
	ncfg.MinNodes, ncfg.WorldSize = co.minNodes, co.worldSize
	ncfg.AllowMinority = co.allowMinority
	if co.rendezvousTimeout > 0 {
		ncfg.RendezvousTimeout = co.rendezvousTimeout
	}
	var id *identity
	if co.nodeName != "" {
		// A stable name: a restart after a crash may take over this
		// process's incarnation (identity.go).
		if id, err = claimIdentity(cfg.Out, co.nodeName); err != nil {
			ln.Close()
			return err
		}
		ncfg.Incarnation = id.inc
	}
	n, err := node.Start(ctx, ncfg, log.Named("node"))
	if err != nil {
		id.release(false)
		ln.Close()
		return err
	}
	defer func() {
		// Leave gracefully so that peers see it at once instead of waiting
		// for failure detection (SIGTERM, Ctrl-C, or the end of the job).
		// The identity goes first: a node that left is never taken over.
		id.release(true)
		if err := n.Leave(2 * time.Second); err != nil {
			log.Debug("leave", zap.Error(err))
		}
		n.Shutdown()
	}()
	log.Info("joined the cluster", zap.String("node", n.ID()), zap.String("gossip", n.Addr()), zap.String("collective", ncfg.Endpoint))

	var world atomic.Pointer[node.World]
	var wantRebuild atomic.Bool
	// jobDone is set by the watcher when a node of this job says it
	// completed it (Meta.Done): a node still waiting in rendezvous then stops
	// instead of starting the job again on its own after the timeout.
	var jobDone atomic.Pointer[string]
	// peerGone is set while a world trains: the watcher calls it when a
	// member of the world fails or leaves (see abortOnPeerLoss).
	var peerGone atomic.Pointer[func(error)]
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watchMembership(watchCtx, n, ncfg.JobHash, &world, &wantRebuild, &peerGone, &jobDone, log)

	var last *node.World
	if id != nil && id.last != nil {
		// We took over a crashed predecessor's identity: start from the
		// world it had committed to, as it would have.
		last = id.last
		log.Info("took over the identity of this node's crashed predecessor", zap.Uint64("last_epoch", last.Epoch), zap.Int("last_size", last.Size))
	}
	var failedAt time.Time
	var failedStep int
	printed := false
	hooks := trainer.Hooks{
		WantRebuild: wantRebuild.Load,
		OnStep: func(st trainer.StepStats) {
			_ = n.UpdateMeta(func(m *node.Meta) {
				m.Step, m.StepMillis = uint64(st.Step), uint32(st.Elapsed.Milliseconds())
			})
			if !failedAt.IsZero() {
				d := time.Since(failedAt)
				log.Info("recovered: a step completed in the new world", zap.Duration("recovery", d), zap.Int("failed_step", failedStep), zap.Int("step", st.Step))
				sess.Metric(map[string]any{"kind": "recovery", "seconds": d.Seconds(), "failed_step": failedStep, "step": st.Step, "world_size": world.Load().Size})
				failedAt = time.Time{}
			}
		},
	}
	if co.ledger != "" {
		led, err := openLedger(co.ledger, n.ID())
		if err != nil {
			return err
		}
		defer led.Close()
		hooks.OnContribute = func(step int, ids []string) { led.record(step, world.Load(), ids) }
	}
	for {
		if ln == nil {
			if ln, err = net.Listen("tcp", ringAddr); err != nil {
				return fmt.Errorf("re-listen for the ring on %s: %w", ringAddr, err)
			}
		}
		opts := ncfg.RendezvousOptions()
		if id != nil {
			opts.BeforeVote = id.vote // a successor must know what we voted for
		}
		if glue.nccl {
			// As leader, hand every member the NCCL id in the commit.
			opts.CommitToken = func(w node.World) ([]byte, error) { return glue.commitToken(w, n.Members()) }
		}
		if last != nil {
			// After a failure, go on with the survivors at once (subject to
			// --min-nodes and the majority rule) rather than wait for
			// --world-size again; returning nodes are admitted by the
			// rebuild vote.
			opts.WorldSize = 0
		}
		w, err := rendezvousUnlessDone(ctx, n, last, opts, &jobDone)
		if err != nil {
			ln.Close()
			if by := jobDone.Load(); by != nil && ctx.Err() == nil {
				log.Info("the job was completed by the other nodes (node "+*by+" finished every step) while this node waited to join it; nothing left to do",
					zap.String("by", *by))
				return nil
			}
			return fmt.Errorf("rendezvous: %w", err)
		}
		world.Store(&w)
		if id != nil {
			if err := id.committed(w); err != nil {
				// A successor then sees a vote newer than the last commit
				// and does not take this identity over: safe.
				log.Warn("could not record the committed world in the identity file", zap.Error(err))
			}
		}
		peers := make([]string, w.Size)
		for i, p := range w.Peers {
			peers[i] = p.Endpoint
		}
		log.Info("world formed", zap.Uint64("epoch", w.Epoch), zap.Int("rank", w.Rank), zap.Int("size", w.Size), zap.Strings("peers", peers))
		rcfg := ring.DefaultConfig()
		rcfg.Rank, rcfg.Size, rcfg.Epoch, rcfg.Peers = w.Rank, w.Size, w.Epoch, peers
		rcfg.Listener, rcfg.Secret = ln, secret
		ln = nil // ring.New owns it now
		comm, err := ring.New(ctx, rcfg, log.Named("ring"))
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			log.Warn("could not connect the ring; forming a new world", zap.Error(err))
			last = &w
			continue
		}
		wc, err := makeWorldComm(ctx, glue, comm, w, &peerGone)
		if err != nil {
			comm.Close()
			if ctx.Err() != nil {
				return err
			}
			if !lostPeer(err) {
				return err
			}
			log.Warn("could not make the world's communicator; forming a new world", zap.Error(err))
			last = &w
			continue
		}
		sess.SetComm(wc)
		wantRebuild.Store(false)
		if f := abortOnPeerLoss(wc); f != nil {
			peerGone.Store(&f)
		}
		err = runWorld(ctx, sess, &w, wc, hooks, stdout, stdoutRank0, &printed)
		finishing, wrote := err == nil, false
		if finishing {
			wrote, err = finishWorld(ctx, sess, comm)
		}
		peerGone.Store(nil)
		if finishing && err == nil {
			glue.retire(wc, w, nil, true)
			comm.Close()
			// Say so before leaving, so that a node still waiting to join
			// does not start the job again alone (see jobDone); a few
			// gossip rounds carry it.
			_ = n.UpdateMeta(func(m *node.Meta) { m.Done = true })
			time.Sleep(5 * ncfg.GossipInterval)
			return nil
		}
		// Every world gets a new ring (its connections carry the epoch);
		// an NCCL communicator that lost a peer may live on, shrunk.
		glue.retire(wc, w, err, ctx.Err() != nil)
		comm.Close()
		switch {
		case ctx.Err() != nil && wrote:
			// The outputs are complete; only the other ranks' confirmation
			// is missing. A checkpoint and --resume would redo the end.
			log.Info("stopped after writing the outputs, before every rank confirmed the end of the job", zap.String("out", sess.Cfg.Out))
			return nil
		case ctx.Err() != nil:
			return sess.Stopped(ctx, err)
		case errors.Is(err, trainer.ErrRebuild):
			log.Info("a node wants to join: forming a new world at this step boundary", zap.Int("step", sess.Trainer.State().Step))
		case lostPeer(err) && trainingComplete(sess):
			log.Warn("lost a peer during the final evaluation: forming a new world to finish the job", zap.Error(err))
		case lostPeer(err):
			if failedAt.IsZero() {
				failedAt, failedStep = time.Now(), sess.Trainer.State().Step+1
			}
			log.Warn("lost a peer: forming a new world and redoing the step in flight", zap.Int("step", failedStep), zap.Error(err))
		default:
			return err
		}
		last = &w
		if err := n.UpdateMeta(func(m *node.Meta) { m.State = node.StateReady }); err != nil {
			return err
		}
	}
}

// lostPeer reports whether err means the world broke (a member died or left,
// or the ring fell out of step), after which the survivors form a new one.
func lostPeer(err error) bool {
	return errors.Is(err, collective.ErrPeerLost) || errors.Is(err, ring.ErrDesync) || errors.Is(err, collective.ErrClosed)
}

// finishWorld evaluates the trained model and has the lead write the outputs
// (Session.Finish), then checks over the ring that every rank got there. Only
// then is the job complete (Meta.Done): a rank that loses a peer before that
// point forms a new world with the survivors and finishes again, so a lead
// that dies before writing is replaced by another (writes are atomic, so a
// second writer is harmless), and no rank reports the job done while the
// outputs may be missing. A lead that could not write (trainer.OutputError)
// still takes part in the check, with a 0, so that every rank stops with an
// error instead of forming world after world that would fail alike. wrote
// says this rank wrote the outputs.
//
// The check is untimed (ring.AllReduceUntimed): the other ranks wait in it
// for as long as the lead's writes take, which for full weights on a slow
// volume can pass the ring's operation timeout.
func finishWorld(ctx context.Context, sess finisher, rc *ring.Comm) (wrote bool, err error) {
	_, ferr := sess.Finish(ctx)
	var oerr *trainer.OutputError
	if ferr != nil && !errors.As(ferr, &oerr) {
		// The evaluation failed: a lost peer (the survivors form a new
		// world), or this rank's own failure (the others go on without it).
		return false, ferr
	}
	wrote = ferr == nil && sess.Lead()
	finished := []float32{1}
	if ferr != nil {
		finished[0] = 0
	}
	if err := rc.AllReduceUntimed(ctx, finished, collective.Sum); err != nil {
		if ferr != nil {
			return false, ferr
		}
		return wrote, fmt.Errorf("confirming that every rank finished: %w", err)
	}
	if ferr != nil {
		return false, ferr
	}
	if n := int(finished[0]); n != rc.Size() {
		return false, fmt.Errorf("the lead could not write the outputs (its log says why); %d of %d ranks finished", n, rc.Size())
	}
	return wrote, nil
}

// finisher is what finishWorld needs of a trainer.Session.
type finisher interface {
	Finish(ctx context.Context) (*trainer.Summary, error)
	Lead() bool
}

// trainingComplete reports whether every step is done (or early stopping
// ended training): what is left is the final evaluation and the outputs.
func trainingComplete(sess *trainer.Session) bool {
	st := sess.Trainer.State()
	return st.Stopped || st.Step >= sess.Trainer.TotalSteps()
}

// runWorld trains in one world: agree on the state, evaluate the base model
// if nobody has yet, and train until done or the world breaks.
func runWorld(ctx context.Context, sess *trainer.Session, w *node.World, comm collective.Communicator, hooks trainer.Hooks,
	stdout io.Writer, stdoutRank0 func(int) bool, printed *bool) error {
	root, err := sess.Trainer.SyncState(ctx)
	if err != nil {
		return err
	}
	st := sess.Trainer.State()
	sess.RecordWorld(checkpoint.WorldRecord{Epoch: w.Epoch, Size: w.Size, FromStep: st.Step + 1})
	if w.Size > 1 {
		sess.Metric(map[string]any{"kind": "world", "epoch": w.Epoch, "size": w.Size, "step": st.Step, "state_from_rank": root})
	}
	if stdoutRank0(w.Rank) {
		sess.SetStdout(stdout)
		if !*printed {
			sess.PrintParams()
			*printed = true
		}
	} else {
		sess.SetStdout(nil)
	}
	if err := sess.Baseline(ctx); err != nil {
		return err
	}
	return sess.Train(ctx, hooks)
}

// makeWorldComm makes the communicator of world w. A member that fails or
// leaves meanwhile (the watcher calls peerGone) cancels it, and so does a
// member that never shows up (NCCL's init timeout): both are a lost peer,
// after which the survivors form a new world instead of every one of them
// exiting.
func makeWorldComm(ctx context.Context, glue *commGlue, rc *ring.Comm, w node.World, peerGone *atomic.Pointer[func(error)]) (collective.Communicator, error) {
	initCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	abort := func(reason error) { cancel(fmt.Errorf("%w: %w", collective.ErrPeerLost, reason)) }
	peerGone.Store(&abort)
	wc, err := glue.worldComm(initCtx, rc, w)
	peerGone.Store(nil)
	if err == nil || ctx.Err() != nil || lostPeer(err) {
		return wc, err
	}
	if cause := context.Cause(initCtx); cause != nil {
		return nil, fmt.Errorf("%w (%w)", cause, err)
	}
	if errors.Is(err, collective.ErrAborted) || errors.Is(err, context.DeadlineExceeded) {
		// Timed out waiting for the other ranks: one of them is gone.
		return nil, fmt.Errorf("%w: %w", collective.ErrPeerLost, err)
	}
	return nil, err
}

// rendezvousUnlessDone is node.Rendezvous, ended early when the watcher
// learns that the job is complete (jobDone set before or during the wait).
func rendezvousUnlessDone(ctx context.Context, n *node.Node, last *node.World, opts node.RendezvousOptions, jobDone *atomic.Pointer[string]) (node.World, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if jobDone.Load() != nil {
				cancel()
				return
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return node.Rendezvous(rctx, n, last, opts)
}

// abortOnPeerLoss returns what to do when the membership layer sees a
// member of the world fail or leave: a communicator that may not notice by
// itself (NCCL: a peer that died while the others wait in a kernel) is told,
// so the collective in flight fails with ErrPeerLost at once instead of at
// the operation timeout, and recovery starts. The TCP ring notices a dead
// peer itself (its connections break), so it needs nothing.
func abortOnPeerLoss(c collective.Communicator) func(error) {
	pl, ok := c.(interface{ PeerLost(error) })
	if !ok {
		return nil
	}
	return pl.PeerLost
}

// watchMembership asks for a new world when a node of this job becomes ready
// outside the current world (a joiner, or a killed node restarted), tells
// the world's communicator when one of its members fails or leaves
// (peerGone), and names stragglers: nodes whose last completed step lags
// the others.
func watchMembership(ctx context.Context, n *node.Node, jobHash string, world *atomic.Pointer[node.World], want *atomic.Bool,
	peerGone *atomic.Pointer[func(error)], jobDone *atomic.Pointer[string], log *zap.Logger) {
	for _, m := range n.Members() {
		if m.ID != n.ID() && m.Meta.Done && m.Meta.JobHash == jobHash {
			id := m.ID
			jobDone.CompareAndSwap(nil, &id)
		}
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	warned := map[string]time.Time{}
	inWorld := func(id string) bool {
		w := world.Load()
		if w == nil {
			return true // no world yet: rendezvous handles it
		}
		for _, p := range w.Peers {
			if p.ID == id {
				return true
			}
		}
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-n.Events():
			if !ok {
				return
			}
			m := ev.Member
			if m.ID != n.ID() && m.Meta.Done && m.Meta.JobHash == jobHash {
				id := m.ID
				jobDone.CompareAndSwap(nil, &id)
			}
			if (ev.Kind == node.EventLeave || !m.Alive) && m.ID != n.ID() && world.Load() != nil && inWorld(m.ID) {
				if f := peerGone.Load(); f != nil {
					log.Warn("a member of the world failed or left: aborting its collective", zap.String("node", m.ID))
					(*f)(fmt.Errorf("node %s failed or left (membership)", m.ID))
				}
			}
			if ev.Kind != node.EventLeave && m.Alive && m.Meta.JobHash == jobHash && m.Meta.State == node.StateReady && !inWorld(m.ID) {
				if !want.Load() {
					log.Info("a node is ready to join", zap.String("node", m.ID))
				}
				want.Store(true)
			}
		case <-tick.C:
			for _, s := range stragglers(n.Members(), jobHash) {
				if time.Since(warned[s.id]) > 30*time.Second {
					warned[s.id] = time.Now()
					log.Warn("straggler", zap.String("node", s.id), zap.String("why", s.why))
				}
			}
		}
	}
}

type straggler struct{ id, why string }

// stragglers names training nodes that are two or more steps behind the
// furthest one, or whose last step took over three times the median.
func stragglers(members []node.Member, jobHash string) []straggler {
	var steps []uint64
	var times []uint32
	for _, m := range members {
		if m.Alive && m.Meta.State == node.StateTraining && m.Meta.JobHash == jobHash {
			steps = append(steps, m.Meta.Step)
			times = append(times, m.Meta.StepMillis)
		}
	}
	if len(steps) < 2 {
		return nil
	}
	maxStep := slices.Max(steps)
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	var out []straggler
	for _, m := range members {
		if !m.Alive || m.Meta.State != node.StateTraining || m.Meta.JobHash != jobHash {
			continue
		}
		switch {
		case m.Meta.Step+2 <= maxStep:
			out = append(out, straggler{m.ID, fmt.Sprintf("at step %d, others at %d", m.Meta.Step, maxStep)})
		case median > 0 && m.Meta.StepMillis > 3*median:
			out = append(out, straggler{m.ID, fmt.Sprintf("last step took %d ms, median %d ms", m.Meta.StepMillis, median)})
		}
	}
	return out
}

func chainStep(a, b func(trainer.StepStats)) func(trainer.StepStats) {
	return func(st trainer.StepStats) {
		if a != nil {
			a(st)
		}
		b(st)
	}
}
