package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"
)

// The rendezvous protocol. Every node runs Propose on its own view; the node
// Propose names leader sends Propose{Epoch, Peers} to the other peers; each
// member checks it against its own view and answers Ack or Nack; when every
// peer acked within AckTimeout the leader sends Commit{World} (with the
// opaque token of RendezvousOptions.CommitToken, if any) and all return
// it. A failed proposal is dropped and a new one takes a new epoch, so epochs
// never repeat. Nodes whose job config differs get a Refuse and stop.
//
// Messages travel over memberlist's reliable channel (TCP, encrypted with the
// gossip key) as [version][kind][msgpack body].

// wireVersion lets a future change of the message format be detected rather
// than misparsed.
const wireVersion = 1

type msgKind uint8

const (
	kindPropose msgKind = iota + 1
	kindAck
	kindNack
	kindCommit
	kindRefuse
	// kindLeaving is not rendezvous: a node about to Leave tells each member
	// so, which gossip cannot reliably do (see Node.Leave). Handled in
	// NotifyMsg, never queued. An older peer logs it as an unknown kind.
	kindLeaving
)

func (k msgKind) String() string {
	switch k {
	case kindPropose:
		return "propose"
	case kindAck:
		return "ack"
	case kindNack:
		return "nack"
	case kindCommit:
		return "commit"
	case kindRefuse:
		return "refuse"
	case kindLeaving:
		return "leaving"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// proposeMsg: the leader asks the peers to form this world.
type proposeMsg struct {
	Epoch    uint64 `msgpack:"epoch"`
	LeaderID string `msgpack:"leader"`
	JobHash  string `msgpack:"jh"`
	Peers    []Peer `msgpack:"peers"`
}

// ackMsg: a member agrees to the proposal of that epoch.
type ackMsg struct {
	Epoch uint64 `msgpack:"epoch"`
	ID    string `msgpack:"id"`
}

// nackMsg: a member disagrees, and says why.
type nackMsg struct {
	Epoch  uint64 `msgpack:"epoch"`
	ID     string `msgpack:"id"`
	Reason string `msgpack:"reason"`
}

// commitMsg: every peer acked; this is the world, with the leader's token
// (World.Token) when its CommitToken hook made one.
type commitMsg struct {
	LeaderID string `msgpack:"leader"`
	World    World  `msgpack:"world"`
}

// refuseMsg: the leader will not take the node ID into the job.
type refuseMsg struct {
	LeaderID string `msgpack:"leader"`
	ID       string `msgpack:"id"`
	JobHash  string `msgpack:"jh"` // the job's hash (the leader's)
	Reason   string `msgpack:"reason"`
}

// leavingMsg: the process ID with incarnation Inc leaves the cluster on
// purpose. Older code sends no Inc (0).
type leavingMsg struct {
	ID  string `msgpack:"id"`
	Inc uint64 `msgpack:"inc,omitempty"`
}

// inbound is one decoded message. Exactly one of the pointers is set.
type inbound struct {
	kind    msgKind
	from    string
	at      time.Time // when NotifyMsg queued it
	propose *proposeMsg
	ack     *ackMsg
	nack    *nackMsg
	commit  *commitMsg
	refuse  *refuseMsg
	leaving *leavingMsg
}

func encodeMessage(kind msgKind, body any) ([]byte, error) {
	b, err := msgpack.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", kind, err)
	}
	return append([]byte{wireVersion, byte(kind)}, b...), nil
}

func decodeMessage(b []byte) (inbound, error) {
	if len(b) < 2 {
		return inbound{}, fmt.Errorf("message of %d bytes", len(b))
	}
	if b[0] != wireVersion {
		return inbound{}, fmt.Errorf("wire version %d, want %d (mixed peertune versions?)", b[0], wireVersion)
	}
	in := inbound{kind: msgKind(b[1])}
	body := b[2:]
	var err error
	switch in.kind {
	case kindPropose:
		in.propose = new(proposeMsg)
		err = msgpack.Unmarshal(body, in.propose)
		in.from = in.propose.LeaderID
	case kindAck:
		in.ack = new(ackMsg)
		err = msgpack.Unmarshal(body, in.ack)
		in.from = in.ack.ID
	case kindNack:
		in.nack = new(nackMsg)
		err = msgpack.Unmarshal(body, in.nack)
		in.from = in.nack.ID
	case kindCommit:
		in.commit = new(commitMsg)
		err = msgpack.Unmarshal(body, in.commit)
		in.from = in.commit.LeaderID
	case kindRefuse:
		in.refuse = new(refuseMsg)
		err = msgpack.Unmarshal(body, in.refuse)
		in.from = in.refuse.LeaderID
	case kindLeaving:
		in.leaving = new(leavingMsg)
		err = msgpack.Unmarshal(body, in.leaving)
		in.from = in.leaving.ID
	default:
		return inbound{}, fmt.Errorf("unknown message kind %d", b[1])
	}
	if err != nil {
		return inbound{}, fmt.Errorf("decode %s: %w", in.kind, err)
	}
	return in, nil
}

// send delivers one message to the node named to over memberlist's reliable
// channel. It dials, so it can block up to memberlist's TCP timeout: callers
// run it off the rendezvous loop.
func (n *Node) send(to string, kind msgKind, body any) error {
	b, err := encodeMessage(kind, body)
	if err != nil {
		return err
	}
	target := n.target(to)
	if target == nil {
		return fmt.Errorf("send %s to %s: not a member", kind, to)
	}
	if err := n.ml.SendReliable(target, b); err != nil {
		return fmt.Errorf("send %s to %s: %w", kind, to, err)
	}
	return nil
}

// sendAsync sends in the background and logs a failure; the protocol
// tolerates lost messages (timeouts and new epochs).
func (n *Node) sendAsync(to string, kind msgKind, body any) {
	go func() {
		if err := n.send(to, kind, body); err != nil {
			n.log.Debug("rendezvous send failed", zap.Error(err))
		}
	}()
}

// ErrRefused is returned (wrapped) by Rendezvous when this node's job config
// differs from the job's: it will never be admitted and must not wait.
var ErrRefused = errors.New("refused: job config differs")

// Rendezvous marks this node Ready and runs the protocol until a world that
// includes this node commits, this node is refused, or ctx ends. last is the
// last world this node committed to (nil at first start): a new world must
// hold a strict majority of it unless opts.AllowMinority. The returned World
// has this node's Rank. On return the node's Meta.Epoch is the world's epoch;
// setting State to Training is the caller's job.
//
// A node the world does not take (WorldSize reached) keeps waiting as a
// standby until ctx ends. Once this node has begun to Leave, Rendezvous
// fails with ErrLeft, even one already running: its peers no longer count
// it (see Leave).
func Rendezvous(ctx context.Context, n *Node, last *World, opts RendezvousOptions) (World, error) {
	def := DefaultRendezvousOptions()
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = def.AckTimeout
	}
	if opts.Settle <= 0 {
		opts.Settle = def.Settle
	}
	if opts.Poll <= 0 {
		opts.Poll = def.Poll
	}
	if opts.RefuseGrace <= 0 {
		opts.RefuseGrace = def.RefuseGrace
	}
	if n.cfg.Observer {
		return World{}, errors.New("rendezvous: an observer node never joins a world")
	}
	if n.left.Load() {
		return World{}, fmt.Errorf("rendezvous: %w", ErrLeft)
	}
	if !n.rdvBusy.CompareAndSwap(false, true) {
		return World{}, errors.New("rendezvous: already running on this node")
	}
	defer n.rdvBusy.Store(false)
	if err := n.UpdateMeta(func(m *Meta) { m.State = StateReady }); err != nil {
		return World{}, fmt.Errorf("rendezvous: %w", err)
	}
	r := &rendezvous{
		n:           n,
		self:        n.ID(),
		inc:         n.Meta().Inc,
		jobHash:     n.cfg.JobHash,
		last:        last,
		opts:        opts,
		start:       time.Now(),
		log:         n.log.Named("rendezvous"),
		refusedSent: map[string]string{},
	}
	if last != nil {
		r.maxEpoch = last.Epoch
	}
	w, err := r.run(ctx)
	if err != nil {
		return World{}, err
	}
	if n.left.Load() {
		// Leave began while the world committed: our peers already stop
		// counting us, so we must not train in it. They find out when we
		// do not connect, and form the next world without us.
		return World{}, fmt.Errorf("rendezvous: %w", ErrLeft)
	}
	if err := n.UpdateMeta(func(m *Meta) { m.Epoch = w.Epoch }); err != nil {
		return World{}, fmt.Errorf("rendezvous: record epoch: %w", err)
	}
	return w, nil
}

// rendezvous is the state of one Rendezvous call. Only its own goroutine
// touches it.
type rendezvous struct {
	n       *Node
	self    string
	inc     uint64 // our incarnation (Meta.Inc)
	jobHash string
	last    *World
	opts    RendezvousOptions
	start   time.Time
	log     *zap.Logger

	reason string // last logged decision, to log changes only

	// leader side
	refusedSent map[string]string // id -> job hash we refused it for
	maxEpoch    uint64            // highest epoch proposed or known: the next proposal is above it
	stableKey   string            // peers of the world Propose last returned
	stableSince time.Time
	notBefore   time.Time // back-off after a failed proposal
	pending     *pendingProposal

	// member side
	acked      *proposeMsg // the proposal we last acked
	ackedAt    time.Time
	refusedBy  *refuseMsg // a Refuse received before our own view agreed
	selfRefAt  time.Time  // when our own view first said we are refused
	standingBy bool
}

type pendingProposal struct {
	msg      proposeMsg
	key      string
	acks     map[string]bool
	deadline time.Time
}

func peersKey(ps []Peer) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.ID)
		b.WriteByte('@')
		b.WriteString(p.Endpoint)
		b.WriteByte(',')
	}
	return b.String()
}

func (r *rendezvous) run(ctx context.Context) (World, error) {
	tick := time.NewTicker(r.opts.Poll)
	defer tick.Stop()
	for {
		if r.n.left.Load() { // Leave signals changed, so this is prompt
			return World{}, fmt.Errorf("rendezvous: %w", ErrLeft)
		}
		if w, done, err := r.step(time.Now()); done {
			return w, err
		}
		select {
		case <-ctx.Done():
			return World{}, fmt.Errorf("rendezvous: %w (waiting: %s)", ctx.Err(), r.reason)
		case <-r.n.done:
			return World{}, fmt.Errorf("rendezvous: %w", ErrShutdown)
		case <-tick.C:
		case <-r.n.changed:
		case m := <-r.n.inbox:
			now := time.Now()
			if r.stale(m, now) {
				continue
			}
			if w, done, err := r.handle(m, now); done {
				return w, err
			}
		}
	}
}

// stale reports (and logs) a Propose, Ack or Nack queued more than
// AckTimeout ago: its leader has given that proposal up by now (it proposes
// again under a new epoch), so answering or counting it only does harm. Such
// messages pile up while a node trains (the inbox is read only inside
// Rendezvous); without this filter a node entering Rendezvous would ack
// proposals long dead, and a stale Ack whose epoch number a later proposal
// reuses would count for it. Commit and Refuse are matched against what this
// call acked or is, so they are never stale.
func (r *rendezvous) stale(m inbound, now time.Time) bool {
	switch m.kind {
	case kindPropose, kindAck, kindNack:
	default:
		return false
	}
	if m.at.IsZero() || now.Sub(m.at) <= r.opts.AckTimeout {
		return false
	}
	r.log.Debug("dropping stale rendezvous message", zap.String("type", m.kind.String()), zap.String("from", m.from), zap.Duration("age", now.Sub(m.at)))
	return true
}

func (r *rendezvous) view(now time.Time) View {
	return View{Self: r.self, Members: r.n.Members(), Departed: r.n.departures(), Elapsed: now.Sub(r.start)}
}

// step re-evaluates the view: leader duties, member bookkeeping, refusal.
func (r *rendezvous) step(now time.Time) (World, bool, error) {
	view := r.view(now)
	w, d := Propose(view, r.last, r.opts)
	if d.Reason != r.reason {
		r.reason = d.Reason
		r.log.Info("rendezvous", zap.String("action", d.Action.String()), zap.String("reason", d.Reason), zap.String("leader", d.Leader))
	}

	if d.Action == Refuse {
		if r.refusedBy != nil {
			return World{}, true, r.refusedError(r.refusedBy)
		}
		if r.selfRefAt.IsZero() {
			r.selfRefAt = now
		}
		if now.Sub(r.selfRefAt) >= r.opts.RefuseGrace {
			err := fmt.Errorf("rendezvous: %w: %s (no word from the leader)", ErrRefused, d.Reason)
			r.log.Error("refused: job config differs", zap.String("ours", ShortHash(r.jobHash)), zap.String("job", ShortHash(d.JobHash)), zap.String("leader", d.Leader))
			return World{}, true, err
		}
		return World{}, false, nil
	}
	r.selfRefAt = time.Time{}

	if d.Leader != r.self {
		r.pending = nil
		return r.memberStep(view, w, d, now)
	}
	r.acked = nil

	// Leader: refuse nodes of another job, once each (again if their hash changes).
	for _, ref := range d.Refused {
		if r.refusedSent[ref.ID] == ref.JobHash {
			continue
		}
		r.refusedSent[ref.ID] = ref.JobHash
		r.log.Warn(fmt.Sprintf("refusing node %s: job config hash %s differs from ours (%s)", ref.ID, ShortHash(ref.JobHash), ShortHash(d.JobHash)),
			zap.String("peer", ref.ID))
		r.n.sendAsync(ref.ID, kindRefuse, &refuseMsg{LeaderID: r.self, ID: ref.ID, JobHash: d.JobHash, Reason: ref.Reason})
	}

	if d.Action != Commit {
		if r.pending != nil {
			r.log.Info("dropping proposal: the view no longer supports a world", zap.Uint64("epoch", r.pending.msg.Epoch), zap.String("reason", d.Reason))
			r.pending = nil
		}
		r.stableKey = ""
		return World{}, false, nil
	}

	key := peersKey(w.Peers)
	if key != r.stableKey {
		r.stableKey, r.stableSince = key, now
	}
	if p := r.pending; p != nil {
		switch {
		case p.key != key:
			r.log.Info("dropping proposal: membership changed", zap.Uint64("epoch", p.msg.Epoch))
			r.pending = nil
		case now.After(p.deadline):
			var missing []string
			for _, peer := range p.msg.Peers {
				if !p.acks[peer.ID] {
					missing = append(missing, peer.ID)
				}
			}
			r.log.Warn("proposal timed out; proposing again with a new epoch", zap.Uint64("epoch", p.msg.Epoch), zap.Strings("no_ack", missing))
			r.pending = nil
			r.notBefore = now.Add(r.opts.Settle)
		default:
			return World{}, false, nil
		}
	}
	if now.Sub(r.stableSince) < r.opts.Settle || now.Before(r.notBefore) {
		return World{}, false, nil
	}

	r.maxEpoch = max(r.maxEpoch+1, w.Epoch)
	msg := proposeMsg{Epoch: r.maxEpoch, LeaderID: r.self, JobHash: d.JobHash, Peers: w.Peers}
	if f := r.opts.BeforeVote; f != nil {
		if err := f(World{Epoch: msg.Epoch, Size: len(msg.Peers), Peers: msg.Peers}); err != nil {
			r.log.Warn("not proposing: could not record our vote", zap.Uint64("epoch", msg.Epoch), zap.Error(err))
			r.notBefore = now.Add(r.opts.Settle)
			return World{}, false, nil
		}
	}
	p := &pendingProposal{msg: msg, key: key, acks: map[string]bool{r.self: true}, deadline: now.Add(r.opts.AckTimeout)}
	r.pending = p
	r.log.Info("proposing world", zap.Uint64("epoch", msg.Epoch), zap.Int("size", len(msg.Peers)))
	for _, peer := range msg.Peers {
		if peer.ID != r.self {
			r.n.sendAsync(peer.ID, kindPropose, &msg)
		}
	}
	return r.maybeCommit()
}

// maybeCommit commits the pending proposal once every peer acked.
func (r *rendezvous) maybeCommit() (World, bool, error) {
	p := r.pending
	if p == nil || len(p.acks) < len(p.msg.Peers) {
		return World{}, false, nil
	}
	w := World{Epoch: p.msg.Epoch, Size: len(p.msg.Peers), Peers: p.msg.Peers}
	w.Rank = Rank(w, r.self)
	w.Token = r.commitToken(w)
	cm := &commitMsg{LeaderID: r.self, World: w}
	// Send the commits and wait for them (bounded): returning first would
	// let the caller start the collective before the others know the world.
	var wg sync.WaitGroup
	for _, peer := range w.Peers {
		if peer.ID == r.self {
			continue
		}
		wg.Go(func() {
			if err := r.n.send(peer.ID, kindCommit, cm); err != nil {
				r.log.Warn("commit not delivered; the peer will adopt it from our gossiped epoch", zap.Error(err))
			}
		})
	}
	waitTimeout(&wg, r.opts.AckTimeout)
	r.log.Info("committed world", zap.Uint64("epoch", w.Epoch), zap.Int("size", w.Size), zap.Int("rank", w.Rank), zap.Bool("token", w.Token != nil))
	return w, true, nil
}

// commitToken asks the CommitToken hook for the token of w, the world this
// leader commits. The leader is rank 0 of w by construction: it leads only
// when Propose names it Decision.Leader, which is the first member of the
// selected world in ID order (TestProposeExhaustive checks it), and the
// proposal it sent, whose Peers w copies, is that world; members ack only
// peers in rank order from that leader. The check below keeps a future
// change from silently handing out a token made outside rank 0.
func (r *rendezvous) commitToken(w World) []byte {
	if r.opts.CommitToken == nil {
		return nil
	}
	if w.Rank != 0 {
		r.log.Error("the leader is not rank 0 of the world it commits; committing without a token", zap.Uint64("epoch", w.Epoch), zap.Int("rank", w.Rank))
		return nil
	}
	tok, err := r.opts.CommitToken(w)
	switch {
	case err != nil:
		r.log.Warn("commit token not made; committing without one", zap.Uint64("epoch", w.Epoch), zap.Error(err))
		return nil
	case len(tok) > MaxTokenLen:
		r.log.Warn("commit token too long; committing without one", zap.Uint64("epoch", w.Epoch), zap.Int("bytes", len(tok)), zap.Int("limit", MaxTokenLen))
		return nil
	case len(tok) == 0:
		return nil
	}
	return tok
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
	}
}

// memberStep keeps the member's bookkeeping current: forget an ack whose
// leader went away or went silent, and adopt a world whose Commit message
// was lost but whose epoch the leader's gossip already shows. The gossip
// must come from the process that proposed (the leader's incarnation in the
// proposal): a new process under the leader's name may have committed
// another world under the same epoch number, since a proposal that never
// committed leaves no trace of its epoch in anyone's metadata.
func (r *rendezvous) memberStep(view View, w World, d Decision, now time.Time) (World, bool, error) {
	if d.Action == Commit && w.Rank < 0 && !r.standingBy {
		// A world forms without us (WorldSize reached): we are a standby.
		r.standingBy = true
		r.log.Info("standing by: the world is full", zap.Int("world_size", r.opts.WorldSize))
	}
	a := r.acked
	if a == nil {
		return World{}, false, nil
	}
	if a.LeaderID != d.Leader || now.Sub(r.ackedAt) > 2*r.opts.AckTimeout {
		r.acked = nil
		return World{}, false, nil
	}
	i := Rank(World{Peers: a.Peers}, a.LeaderID)
	if i < 0 {
		return World{}, false, nil // onPropose acks only proposals its leader is in
	}
	for _, m := range view.Members {
		if m.ID == a.LeaderID && m.Meta.Epoch == a.Epoch && sameProcess(a.Peers[i], m.ID, m.Meta.Inc) {
			// No Token: it travels only in the lost Commit.
			adopted := World{Epoch: a.Epoch, Size: len(a.Peers), Peers: a.Peers}
			adopted.Rank = Rank(adopted, r.self)
			r.log.Info("commit message lost; adopting the world the leader's gossip shows committed (without its token)", zap.Uint64("epoch", adopted.Epoch), zap.Int("rank", adopted.Rank))
			return adopted, true, nil
		}
	}
	return World{}, false, nil
}

// handle processes one protocol message.
func (r *rendezvous) handle(m inbound, now time.Time) (World, bool, error) {
	switch m.kind {
	case kindPropose:
		r.onPropose(m.propose, now)
	case kindAck:
		if p := r.pending; p != nil && m.ack.Epoch == p.msg.Epoch && Rank(World{Peers: p.msg.Peers}, m.ack.ID) >= 0 {
			p.acks[m.ack.ID] = true
			return r.maybeCommit()
		}
	case kindNack:
		if p := r.pending; p != nil && m.nack.Epoch == p.msg.Epoch {
			r.log.Info("proposal declined; will propose again", zap.Uint64("epoch", p.msg.Epoch), zap.String("peer", m.nack.ID), zap.String("reason", m.nack.Reason))
			r.pending = nil
			r.notBefore = now.Add(r.opts.Settle)
		}
	case kindCommit:
		c := m.commit
		// The world must be the one we acked, peer for peer (incarnations
		// included): a late Commit from a leader that was since replaced
		// by a new process of its name could carry our acked epoch.
		if a := r.acked; a != nil && c.World.Epoch == a.Epoch && c.LeaderID == a.LeaderID && slices.Equal(c.World.Peers, a.Peers) {
			w := c.World
			w.Size = len(w.Peers)
			w.Rank = Rank(w, r.self)
			if len(w.Token) > MaxTokenLen {
				r.log.Warn("dropping an oversized commit token", zap.Int("bytes", len(w.Token)), zap.Int("limit", MaxTokenLen))
				w.Token = nil
			} else if len(w.Token) == 0 {
				w.Token = nil // one "no token" value, whatever the decoder made of an empty one
			}
			r.log.Info("joined world", zap.Uint64("epoch", w.Epoch), zap.Int("size", w.Size), zap.Int("rank", w.Rank), zap.String("leader", c.LeaderID), zap.Bool("token", w.Token != nil))
			return w, true, nil
		}
		r.log.Debug("ignoring commit we did not ack", zap.Uint64("epoch", c.World.Epoch), zap.String("leader", c.LeaderID))
	case kindRefuse:
		f := m.refuse
		if f.ID != r.self {
			return World{}, false, nil
		}
		if f.JobHash == r.jobHash {
			r.log.Warn("ignoring refusal from a node of our own job", zap.String("leader", f.LeaderID), zap.String("reason", f.Reason))
			return World{}, false, nil
		}
		// Trust it only when our own view agrees that we are the odd one
		// out; otherwise remember it for when the view catches up.
		_, d := Propose(r.view(now), r.last, r.opts)
		if d.Action == Refuse {
			return World{}, true, r.refusedError(f)
		}
		r.refusedBy = f
		r.log.Warn("refusal received before our view agrees; waiting for gossip", zap.String("leader", f.LeaderID))
	}
	return World{}, false, nil
}

func (r *rendezvous) refusedError(f *refuseMsg) error {
	r.log.Error(fmt.Sprintf("refused by leader %s: job config differs (ours %s, the job's %s)", f.LeaderID, ShortHash(r.jobHash), ShortHash(f.JobHash)),
		zap.String("leader", f.LeaderID))
	return fmt.Errorf("rendezvous: %w: refused by leader %s (our job config hash %s, the job's %s)", ErrRefused, f.LeaderID, ShortHash(r.jobHash), ShortHash(f.JobHash))
}

// onPropose answers a leader's proposal from this member's own view.
func (r *rendezvous) onPropose(p *proposeMsg, now time.Time) {
	reason := declineReason(p, r.self, r.inc, r.jobHash, r.view(now), r.last, r.opts)
	if reason != "" {
		r.log.Info("declining proposal", zap.Uint64("epoch", p.Epoch), zap.String("leader", p.LeaderID), zap.String("reason", reason))
		r.n.sendAsync(p.LeaderID, kindNack, &nackMsg{Epoch: p.Epoch, ID: r.self, Reason: reason})
		return
	}
	if f := r.opts.BeforeVote; f != nil {
		if err := f(World{Epoch: p.Epoch, Size: len(p.Peers), Peers: p.Peers}); err != nil {
			r.log.Warn("not acking: could not record our vote", zap.Uint64("epoch", p.Epoch), zap.Error(err))
			return
		}
	}
	r.acked, r.ackedAt = p, now
	r.n.sendAsync(p.LeaderID, kindAck, &ackMsg{Epoch: p.Epoch, ID: r.self})
}

// declineReason says why the member self, of incarnation inc and job hash
// jobHash, must not ack proposal p, given its own view and last world; ""
// when it may. The member's ack is what makes it count in the leader's
// majority of the last world, so it checks that majority itself, and
// checks that the proposal names this process: a leader whose view still
// shows our predecessor under our name (we restarted) would otherwise
// count us as that process (see lastQuorum). An incarnation of 0 in the
// proposal comes from a leader running older code, which sends none; it is
// acked, and that world is matched by name later.
func declineReason(p *proposeMsg, self string, inc uint64, jobHash string, view View, last *World, opts RendezvousOptions) string {
	_, d := Propose(view, last, opts)
	q := lastQuorum(p.Peers, last, departedSet(view.Departed, canonical(view.Members)))
	i := Rank(World{Peers: p.Peers}, self)
	switch {
	case p.JobHash != jobHash:
		return fmt.Sprintf("job config hash %s differs from ours (%s)", ShortHash(p.JobHash), ShortHash(jobHash))
	case i < 0:
		return "we are not in the proposed world"
	case p.Peers[i].Inc != 0 && p.Peers[i].Inc != inc:
		return fmt.Sprintf("the proposal names another process of our name (incarnation %016x, we are %016x)", p.Peers[i].Inc, inc)
	case p.LeaderID != d.Leader:
		return fmt.Sprintf("our view's leader is %q", d.Leader)
	case last != nil && p.Epoch <= last.Epoch:
		return fmt.Sprintf("epoch %d is not after our last world's %d", p.Epoch, last.Epoch)
	case !opts.AllowMinority && !q.ok():
		return "no majority of our last world (" + q.String() + ")"
	case !opts.AllowMinority && last == nil && opts.WorldSize > 1 && 2*len(p.Peers) <= opts.WorldSize && !jobStarted(canonical(view.Members), jobHash):
		// The leader checks this too (Propose); a leader started with
		// another --world-size must not get a minority first world past us.
		return fmt.Sprintf("a first world of %d nodes is no strict majority of our world-size (%d)", len(p.Peers), opts.WorldSize)
	case !slices.IsSortedFunc(p.Peers, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) }):
		return "peers not in rank order"
	}
	return ""
}
