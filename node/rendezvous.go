package node

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file is the pure core of rendezvous: a function from a membership view
// to a proposed world. No clocks, no network, no randomness: the caller passes
// in how long it has waited. Rendezvous (protocol.go) runs it at the edges.

// Peer is one member of a world, in rank order: a process, named by its ID
// and its incarnation (Meta.Inc), so that a later world can tell the same
// process from a new one under the same name.
type Peer struct {
	ID       string `msgpack:"id"`
	Endpoint string `msgpack:"ep"`
	// Inc is the process's incarnation as the leader saw it in its
	// metadata; 0 when unknown (a world committed, or proposed, by older
	// code, which does not send it; see lastQuorum).
	Inc uint64 `msgpack:"inc,omitempty"`
}

// World is a committed (or proposed) data-parallel group. Peers are ordered
// by rank, which is ID order; Rank is this node's index in Peers (-1 when it
// is not a member). Epochs only grow: every proposal takes a new one.
type World struct {
	Epoch uint64 `msgpack:"epoch"`
	Rank  int    `msgpack:"-"` // per node: not sent on the wire
	Size  int    `msgpack:"size"`
	Peers []Peer `msgpack:"peers"`
	// Token is opaque bytes the leader attached when it committed the world
	// (RendezvousOptions.CommitToken), for instance the collective's
	// bootstrap id; node never looks inside. Every member that received the
	// Commit holds the same bytes. It is nil when the leader attached none,
	// and on a member that adopted the world from gossip because its Commit
	// was lost: gossip metadata (512 bytes, every node's) has no room for it.
	// So one member having a token does not mean all have it: the members
	// must agree among themselves before relying on it.
	Token []byte `msgpack:"token,omitempty"`
}

// MaxTokenLen bounds World.Token. The reliable channel has no small limit,
// but the leader sends the Commit to every member while the others wait for
// it; a bootstrap id is a few hundred bytes at most.
const MaxTokenLen = 4096

// Rank returns id's rank in w, or -1 if id is not in w.
func Rank(w World, id string) int {
	for i, p := range w.Peers {
		if p.ID == id {
			return i
		}
	}
	return -1
}

// Member is one node as this node sees it: gossip address, liveness and the
// metadata it advertises.
type Member struct {
	ID    string // memberlist name; equals Meta.ID for well-formed peers
	Addr  string // gossip host:port
	Alive bool   // false only for a node that failed or left
	Meta  Meta
}

// Departure names one process that announced a graceful departure: the
// node's ID and the incarnation (Meta.Inc) of the process that said so; Inc
// 0 when it came from older code, which sends none.
type Departure struct {
	ID  string
	Inc uint64
}

// View is the input of Propose: the members this node knows, who it is, who
// left on purpose, and how long it has been waiting (a fact about now, like
// the members).
type View struct {
	Self    string
	Members []Member
	// Departed lists the processes that announced a graceful departure
	// (Node.Leave: a notice to each member, Leaving metadata). Such a
	// process never trains in this job again, so it is never a candidate
	// and does not count in the majority of the last world (see
	// lastQuorum). A new process under a departed name has another
	// incarnation: it is a candidate, and its predecessor stays departed.
	// A member whose metadata says Leaving counts as departed too. Order
	// does not matter; the caller owns the slice.
	Departed []Departure
	Elapsed  time.Duration
}

// RendezvousOptions are the rules of rendezvous. Propose reads MinNodes,
// WorldSize, Timeout and AllowMinority; the protocol timings below them are
// read by Rendezvous only.
type RendezvousOptions struct {
	// MinNodes is the fewest nodes a world may have (values < 1 mean 1).
	MinNodes int
	// WorldSize > 0: wait for that many nodes; a world never has more (the
	// rest stand by). After Timeout, start with what is there (>= MinNodes,
	// and, for the job's first world, a strict majority of WorldSize unless
	// AllowMinority).
	WorldSize int
	// Timeout bounds the wait for WorldSize; 0 waits for ever.
	Timeout time.Duration
	// AllowMinority drops the strict-majority rules (of the last world, and
	// of WorldSize for the job's first world). It is the operator's explicit
	// override: without it a partition's minority side waits instead of
	// training (no split brain).
	AllowMinority bool

	// AckTimeout is how long the leader waits for every peer's Ack before it
	// gives the proposal up and proposes again under a new epoch.
	AckTimeout time.Duration
	// Settle is how long the leader's proposed world must stay unchanged
	// before it proposes, so that gossip has spread the newest member's
	// metadata and the members agree who leads.
	Settle time.Duration
	// Poll is how often the view is re-evaluated when nothing else happens.
	Poll time.Duration
	// RefuseGrace is how long a node that finds itself refused waits for the
	// leader's Refuse message (which names the leader) before it gives up on
	// its own.
	RefuseGrace time.Duration

	// CommitToken, when set, is called by the leader once per world it
	// commits, with that world, just before the Commit goes out; what it
	// returns travels to every member in the Commit as World.Token. The
	// leader is always rank 0 of the world it commits and a member of it,
	// so the hook may make something only the world's rank 0 can make and
	// that must live in a member (NCCL's unique id names a bootstrap socket
	// in the process that made it). An error, or a token longer than
	// MaxTokenLen, is logged and the world commits without a token: members
	// must cope with a missing token anyway (see World.Token). It runs on
	// the goroutine that called Rendezvous, only on the leader; like the
	// timings, only Rendezvous reads it. nil: no token.
	CommitToken func(World) ([]byte, error)

	// BeforeVote, when set, is called with a proposed world before this
	// node commits itself to it: before a member sends its Ack and before
	// the leader sends its Propose (its own vote). A process that persists
	// it (cmd/peertune's identity file) lets a successor that takes over
	// its incarnation after a crash know what it voted for: counted as the
	// same member, the successor must not vote differently (Raft's
	// persisted vote). An error withholds the vote (logged). It runs on the
	// goroutine that called Rendezvous. nil: nothing to persist.
	BeforeVote func(World) error
}

// DefaultRendezvousOptions: one node is enough, no target size, and protocol
// timings for a LAN.
func DefaultRendezvousOptions() RendezvousOptions {
	return RendezvousOptions{
		MinNodes: 1,
		Timeout:  5 * time.Minute, // same reason as Config.RendezvousTimeout
		// A round trip on a LAN is milliseconds; 5 s covers a member that is
		// briefly busy (GC, page faults while loading a model) without making
		// a dead member stall the world for long.
		AckTimeout: 5 * time.Second,
		// A few gossip intervals (200 ms): long enough for a new member's
		// Ready state to reach everyone, short next to model loading.
		Settle: 600 * time.Millisecond,
		// Events wake the loop at once; polling only catches what no event
		// announces (the clock passing Timeout, a suspected node).
		Poll: 100 * time.Millisecond,
		// The leader refuses a node as soon as it sees it; the refused node
		// waits about that long for the message before giving up alone.
		RefuseGrace: 5 * time.Second,
	}
}

// Action is what Propose tells the caller to do.
type Action int

const (
	// Wait: no world can form yet; Decision.Reason says why.
	Wait Action = iota
	// Commit: the returned world is ready; Decision.Leader should propose it.
	Commit
	// Refuse: this node (View.Self) cannot join: its job config differs from
	// the job's. It must stop and say so rather than wait for ever.
	Refuse
)

func (a Action) String() string {
	switch a {
	case Wait:
		return "wait"
	case Commit:
		return "commit"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Refusal names a node that cannot join the job, and why.
type Refusal struct {
	ID      string
	JobHash string
	Reason  string
}

// Decision explains Propose's answer.
type Decision struct {
	Action Action
	// Reason is a short human explanation: "2 of 3 nodes (world-size)",
	// "no majority of last world (1 of 3)", ...
	Reason string
	// Leader is the node that proposes: the smallest ID of the world that
	// would form (rank 0). Empty when no node is eligible.
	Leader string
	// JobHash is the job's config hash that eligible nodes share.
	JobHash string
	// Refused lists the ready nodes whose job config hash differs from the
	// job's, whatever the Action: the others may still commit without them.
	Refused []Refusal
}

// Propose computes the world that view supports, given the last world this
// node committed to (nil: none). It is deterministic: the same view, in any
// order, gives the same world from every member's point of view (only
// World.Rank and a Refuse action depend on View.Self).
//
// Rules:
//   - candidates are alive members in state Ready or Training;
//   - the job's config hash is the one of the candidate group that already
//     trains (highest Meta.Epoch), else the larger group, among groups that
//     train or reach MinNodes. So a node started with a different config is
//     refused by everyone, including itself, whatever its ID; candidates with
//     another hash are Refused. While that is undecided (a tie, or no group
//     big enough) everyone waits and nobody is refused;
//   - eligible = candidates with the job's hash. With WorldSize > 0 at most
//     WorldSize of them are taken, processes of the last world first (to
//     keep its majority; a new process under a last-world name is not one),
//     then by ID;
//   - the world is ordered by ID; its first member leads;
//   - size >= MinNodes; with WorldSize > 0, before Timeout and before the
//     job has a world (a same-job member with Meta.Epoch > 0), size ==
//     WorldSize;
//   - processes that left on purpose (View.Departed, or Leaving metadata)
//     are never candidates;
//   - the job's first world (no last world, and no same-job member has
//     been in one: Meta.Epoch 0 everywhere) with WorldSize > 1 and no
//     AllowMinority holds a strict majority of WorldSize: two groups that
//     cannot see each other at start (a partition, a seed that came up
//     late) cannot both start the job when the wait times out. Members
//     check it too (declineReason). It holds when at most WorldSize nodes
//     are started for the job: with standbys beyond it, two groups can
//     each hold a majority of WorldSize;
//   - with a last world and no AllowMinority, the new world holds a strict
//     majority of the last world's processes that did not leave on
//     purpose, counting only the same processes (ID and incarnation): two
//     disjoint sides of a partition cannot both have one, so at most one
//     trains (see lastQuorum for why, with departures and names that come
//     back as new processes);
//   - Epoch is one more than the largest epoch known: last's, and every
//     same-job member's Meta.Epoch.
func Propose(view View, last *World, opts RendezvousOptions) (World, Decision) {
	minNodes := max(opts.MinNodes, 1)
	members := canonical(view.Members)
	departed := departedSet(view.Departed, members)

	var cands []Member
	for _, m := range members {
		// A member that said it leaves but whose Leaving metadata has not
		// reached us yet still shows its old state: the notice decides. A
		// member that completed the job (Done) trains no new world.
		if m.Alive && (m.Meta.State == StateReady || m.Meta.State == StateTraining) && !departed[departureOf(m)] && !m.Meta.Done {
			cands = append(cands, m)
		}
	}
	ref, undecided := jobHash(cands, minNodes)
	var d Decision
	if undecided != "" {
		// Nobody is refused while it is unclear which config is the job's:
		// a refusal ends the refused process, so it must not hinge on which
		// node happened to become ready first.
		d.Reason = undecided
		return World{Rank: -1}, d
	}
	d.JobHash = ref
	var elig []Member
	selfRefused := false
	for _, c := range cands {
		if c.Meta.JobHash == ref {
			elig = append(elig, c)
			continue
		}
		d.Refused = append(d.Refused, Refusal{
			ID:      c.ID,
			JobHash: c.Meta.JobHash,
			Reason:  fmt.Sprintf("job config hash %s differs from the job's (%s)", ShortHash(c.Meta.JobHash), ShortHash(ref)),
		})
		if c.ID == view.Self {
			selfRefused = true
		}
	}

	sel := selectWorld(elig, last, opts.WorldSize)
	if len(sel) > 0 {
		d.Leader = sel[0].ID
	}
	if selfRefused {
		d.Action = Refuse
		d.Reason = fmt.Sprintf("our job config hash differs from the job's (%s, led by %s)", ShortHash(ref), d.Leader)
		return World{Rank: -1}, d
	}
	size := len(sel)
	// Once the job has a world, WorldSize no longer counts: a fresh node
	// that leads the next one (by ID) does not wait for it, and the
	// survivors' majority rule admits it (see below).
	started := jobStarted(members, ref)
	switch {
	case size == 0:
		d.Reason = "no ready nodes"
		return World{Rank: -1}, d
	case size < minNodes:
		d.Reason = fmt.Sprintf("%d of %d nodes (min-nodes)", size, minNodes)
		return World{Rank: -1}, d
	case opts.WorldSize > 0 && size < opts.WorldSize && !started && !(opts.Timeout > 0 && view.Elapsed >= opts.Timeout):
		d.Reason = fmt.Sprintf("%d of %d nodes (world-size)", size, opts.WorldSize)
		return World{Rank: -1}, d
	}
	if !opts.AllowMinority && last == nil && opts.WorldSize > 1 && 2*size <= opts.WorldSize && !started {
		d.Reason = fmt.Sprintf("%d of %d nodes: the job's first world needs a strict majority of world-size (%d; --allow-minority starts anyway)", size, opts.WorldSize, opts.WorldSize/2+1)
		return World{Rank: -1}, d
	}
	peers := make([]Peer, size)
	for i, m := range sel {
		peers[i] = Peer{ID: m.ID, Endpoint: m.Meta.Endpoint, Inc: m.Meta.Inc}
	}
	if q := lastQuorum(peers, last, departed); !opts.AllowMinority && !q.ok() {
		d.Reason = "no majority of last world (" + q.String() + ")"
		return World{Rank: -1}, d
	}

	var epoch uint64
	if last != nil {
		epoch = last.Epoch
	}
	for _, m := range members {
		if m.Meta.JobHash == ref {
			epoch = max(epoch, m.Meta.Epoch)
		}
	}
	w := World{Epoch: epoch + 1, Size: size, Peers: peers}
	w.Rank = Rank(w, view.Self)
	d.Action = Commit
	d.Reason = fmt.Sprintf("%d nodes", size)
	return w, d
}

// jobStarted reports whether a member of the job (config hash ref) has been
// in a world: then the job's first world exists (or existed), and whoever
// joins it is admitted by its members' last-world majority, not by
// WorldSize's.
func jobStarted(members []Member, ref string) bool {
	for _, m := range members {
		if m.Meta.JobHash == ref && m.Meta.Epoch > 0 {
			return true
		}
	}
	return false
}

// canonical sorts members by ID and drops every copy of a duplicated ID:
// memberlist never reports one name twice, and when something does we cannot
// tell which copy is true, so neither counts. Input order cannot matter.
func canonical(in []Member) []Member {
	ms := slices.Clone(in)
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	out := ms[:0]
	for i := 0; i < len(ms); {
		j := i + 1
		for j < len(ms) && ms[j].ID == ms[i].ID {
			j++
		}
		if j == i+1 && ms[i].ID != "" {
			out = append(out, ms[i])
		}
		i = j
	}
	return out
}

// jobHash picks the job's config hash among the candidates (sorted by ID).
// A group of candidates sharing a hash is viable when it already trains
// (some member has an epoch) or has at least minNodes members. The job's
// hash is the viable group's that has progressed furthest (highest epoch),
// then the largest. A tie at the top, or several groups none of which is
// viable, leaves it undecided: the second result then says why, and nobody
// is refused until more nodes arrive. A single group is the job even when
// too small (it then waits for min-nodes).
func jobHash(cands []Member, minNodes int) (string, string) {
	type group struct {
		hash  string
		epoch uint64
		n     int
	}
	var groups []*group
	byHash := map[string]*group{}
	for _, c := range cands {
		g := byHash[c.Meta.JobHash]
		if g == nil {
			g = &group{hash: c.Meta.JobHash}
			byHash[g.hash] = g
			groups = append(groups, g)
		}
		g.n++
		g.epoch = max(g.epoch, c.Meta.Epoch)
	}
	switch len(groups) {
	case 0:
		return "", ""
	case 1:
		return groups[0].hash, ""
	}
	// Best first: viable, then epoch, then size; hash only to make the
	// reason's order deterministic.
	viable := func(g *group) bool { return g.epoch > 0 || g.n >= minNodes }
	slices.SortFunc(groups, func(a, b *group) int {
		if va, vb := viable(a), viable(b); va != vb {
			if va {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(b.epoch, a.epoch), cmp.Compare(b.n, a.n), cmp.Compare(a.hash, b.hash))
	})
	top, next := groups[0], groups[1]
	if viable(top) && (top.epoch != next.epoch || top.n != next.n || !viable(next)) {
		return top.hash, ""
	}
	var parts []string
	for _, g := range groups {
		parts = append(parts, fmt.Sprintf("%d with %s", g.n, ShortHash(g.hash)))
	}
	return "", "job config hashes disagree (" + strings.Join(parts, ", ") + ")"
}

// selectWorld takes the eligible members (sorted by ID), capped at worldSize
// when it is > 0 with the processes of last first, and returns them in ID
// order.
func selectWorld(elig []Member, last *World, worldSize int) []Member {
	if worldSize <= 0 || len(elig) <= worldSize {
		return elig
	}
	sel := slices.Clone(elig)
	inLast := func(m Member) bool {
		return last != nil && slices.ContainsFunc(last.Peers, func(lp Peer) bool { return sameProcess(lp, m.ID, m.Meta.Inc) })
	}
	slices.SortStableFunc(sel, func(a, b Member) int {
		ia, ib := inLast(a), inLast(b)
		switch {
		case ia && !ib:
			return -1
		case ib && !ia:
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
	sel = sel[:worldSize]
	slices.SortFunc(sel, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return sel
}

// departedSet is the set of processes that left on purpose: those in
// departed, and the members (canonical) whose metadata says Leaving. Both are
// the process's own announcement (Node.Leave sends the notice and sets the
// metadata; nothing else may set Leaving), so either is enough.
// The result is nil (reads as empty) when nobody left, the common case.
func departedSet(departed []Departure, members []Member) map[Departure]bool {
	var set map[Departure]bool
	add := func(d Departure) {
		if set == nil {
			set = map[Departure]bool{}
		}
		set[d] = true
	}
	for _, d := range departed {
		if d.ID != "" {
			add(d)
		}
	}
	for _, m := range members {
		if m.Meta.State == StateLeaving {
			add(departureOf(m))
		}
	}
	return set
}

// departureOf is the departure member m's process would announce.
func departureOf(m Member) Departure { return Departure{ID: m.ID, Inc: m.Meta.Inc} }

// sameProcess reports whether the process id with incarnation inc is the
// last world's peer lp. With lp.Inc 0 (a world committed or proposed by
// older code) the incarnation is unknown and the name decides, as it did
// before incarnations; see lastQuorum for what that keeps and loses. A
// process whose own incarnation is 0 runs older code, so it can be a last
// world's peer with an incarnation only if that peer's Inc is 0 too.
func sameProcess(lp Peer, id string, inc uint64) bool {
	return lp.ID == id && (lp.Inc == 0 || lp.Inc == inc)
}

// leftOnPurpose reports whether the last world's peer lp announced its
// departure, by the same rule as sameProcess: by incarnation, or by name
// for a peer without one.
func leftOnPurpose(lp Peer, departed map[Departure]bool) bool {
	if lp.Inc != 0 {
		return departed[Departure{ID: lp.ID, Inc: lp.Inc}]
	}
	for d := range departed {
		if d.ID == lp.ID {
			return true
		}
	}
	return false
}

// quorum is where a proposed world stands against the majority rule of the
// last world.
type quorum struct {
	have    int // the last world's processes that are in the world and did not leave
	of      int // the last world's size
	left    int // the last world's processes that left on purpose
	renewed int // the last world's names in the world as a new process (not in have)
	none    bool
}

// lastQuorum measures peers against last (nil or empty: no rule, none).
// A last world is made of processes, not names: the proposed world's peer
// stands for the last world's peer lp only when it is the same process, with
// lp's ID and lp's incarnation (Peer.Inc, from Meta.Inc: random per
// process). The rule is a strict majority of the last world's processes
// that did not leave on purpose: 2·have > of − left, where left counts the
// last world's processes whose own departure announcement this node heard
// of (by ID and incarnation), and have the others that peers holds. A new
// process under a last-world name is a joiner: it may be in the new world
// but does not count for the last one (renewed counts such names, for the
// reason). A departed process is not counted in have even if peers names it
// (a proposal from a leader whose view differs).
//
// Why this keeps "no split brain", however many names come back. Let L be
// the last world, n = |L|, as a set of processes, and G ⊆ L the processes of
// L that announced their departure (Node.Leave). A world commits only once
// every one of its peers acked it (the leader, which names itself from its
// own metadata, included); a process acks only a proposal that names it
// with its own incarnation (declineReason), and never once it has begun to
// Leave (its Rendezvous fails with ErrLeft from then on). So what a
// committed world counts in have are processes of L, each through its own
// ack, none of them in G. A process is on one side of a partition, so the
// counted sets C_X and C_Y of two sides X and Y are disjoint subsets of L∖G.
// A side discounts only departures it heard of, and each names the process
// that announced it, so what a side discounts lies in G: left ≤ |G|. If both
// sides committed, |C_X| > (n−left_X)/2 ≥ (n−|G|)/2 and likewise for Y, so
// |C_X| + |C_Y| > n−|G| ≥ |C_X ∪ C_Y|: impossible. Different sides may know
// different subsets of G, or none (a lost notice makes a departure look like
// a failure, which only makes a side stricter).
//
// A name that comes back (Slurm requeues reuse --node-name) is a new process
// with a new incarnation: it is in no C_S, and its join does not undo its
// predecessor's departure, which stays keyed by the old incarnation (Node
// keeps it). Nothing in the argument counts names, so it holds for any
// number of returned names on either side, and also for a name restarted
// while its old process was only cut off, not dead, which the older rule by
// name counted on both sides. The example that rule failed: L = {a,b,c,d};
// a and b leave while a partition separates {a,c} from {b,d}, so only c
// hears of a and only d of b; a new "b" comes up beside c and a new "a"
// beside d. By name c counted {c,b} (2 of 4; 1 left on purpose) and d {d,a}:
// both committed. Now c counts {c}, 1 of the 3 that did not leave, and d
// likewise: both wait until the partition heals and each hears of both
// departures (then 2 of the 2 that did not leave).
//
// What it costs. A process that crashed and was restarted under its name
// (no Leave) is, to its peers, a failed member plus a joiner: its old
// incarnation is neither counted nor discounted. So a world of 2 whose other
// node crashed and came back waits (1 of 2), and so does a world of 3 with
// one node crashed-and-restarted and one dead (1 of 3); the rule by name
// went on in both. That is the conservative choice: nothing the survivors
// see tells a crashed predecessor from one that is only cut off (a requeue
// may start the new process while the old one still runs behind a
// partition), and counting the new process in the old one's place counts
// that member on both sides: L = {a,b,c}, {a, new c} against {b, old c}, 2
// of 3 each. The ways on are the operator's: AllowMinority
// (--allow-minority), or stopping a node gracefully (Leave) before it is
// restarted, which discounts the old incarnation.
//
// Worlds without incarnations. A last world's peer with Inc 0 was committed
// by older code, or proposed by an older leader, which does not copy
// Meta.Inc. It is matched by name, as before (sameProcess, leftOnPurpose):
// any member of that name counts for it, any departure of that name
// discounts it. Refusing to count such peers would leave the upgraded nodes
// of a job in a rolling upgrade waiting for ever. The price is the older
// guarantee for those peers only. A name whose old process is dead counts
// its new process as if it were the old one, on one side only: harmless. A
// name whose old process left, counted through its new process on one side
// and discounted on the other, is safe once (m nodes did not leave: one
// side needs ⌊m/2⌋+1 of them, the other ⌊(m+1)/2⌋+1 of them and the new
// process, m+2 of m+1), not twice (the example above). A name whose old
// process is only cut off counts on both sides: not even once. Every world
// committed once all nodes run this code has incarnations throughout.
func lastQuorum(peers []Peer, last *World, departed map[Departure]bool) quorum {
	if last == nil || len(last.Peers) == 0 {
		return quorum{none: true}
	}
	q := quorum{of: len(last.Peers)}
	for _, lp := range last.Peers {
		switch {
		case leftOnPurpose(lp, departed):
			q.left++
		case slices.ContainsFunc(peers, func(p Peer) bool { return sameProcess(lp, p.ID, p.Inc) }):
			q.have++
		case slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == lp.ID }):
			q.renewed++
		}
	}
	return q
}

func (q quorum) ok() bool { return q.none || 2*q.have > q.of-q.left }

// String is the reason's "k of n", with the departures and the names back
// as new processes when there are any: "1 of 3; 1 left on purpose" needs 2
// of the 2 that did not leave; "1 of 2; 1 restarted as a new process" says
// why a node that is back does not help.
func (q quorum) String() string {
	s := fmt.Sprintf("%d of %d", q.have, q.of)
	if q.left > 0 {
		s += fmt.Sprintf("; %d left on purpose", q.left)
	}
	if q.renewed > 0 {
		s += fmt.Sprintf("; %d restarted as a new process", q.renewed)
	}
	return s
}

// ShortHash shortens a job hash for logs: "abcdef01…".
func ShortHash(h string) string {
	if h == "" {
		return "(none)"
	}
	if len(h) > 8 {
		return h[:8] + "…"
	}
	return h
}
