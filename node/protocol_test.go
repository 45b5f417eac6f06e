package node

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestMessageRoundTrip(t *testing.T) {
	w := *world(3, "n1", "n2")
	w.Token = []byte{0xc4, 2, 0xde, 0xad} // opaque to node
	cases := []struct {
		kind msgKind
		body any
		get  func(inbound) any
	}{
		{kindPropose, &proposeMsg{Epoch: 3, LeaderID: "n1", JobHash: hashA, Peers: w.Peers}, func(i inbound) any { return i.propose }},
		{kindAck, &ackMsg{Epoch: 3, ID: "n2"}, func(i inbound) any { return i.ack }},
		{kindNack, &nackMsg{Epoch: 3, ID: "n2", Reason: "why"}, func(i inbound) any { return i.nack }},
		{kindCommit, &commitMsg{LeaderID: "n1", World: w}, func(i inbound) any { return i.commit }},
		{kindRefuse, &refuseMsg{LeaderID: "n1", ID: "n9", JobHash: hashA, Reason: "differs"}, func(i inbound) any { return i.refuse }},
		{kindLeaving, &leavingMsg{ID: "n2", Inc: 0xfeed}, func(i inbound) any { return i.leaving }},
	}
	for _, c := range cases {
		b, err := encodeMessage(c.kind, c.body)
		if err != nil {
			t.Fatal(err)
		}
		in, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		if in.kind != c.kind || !reflect.DeepEqual(c.get(in), c.body) {
			t.Fatalf("%s: got %+v", c.kind, c.get(in))
		}
	}
	for _, bad := range [][]byte{nil, {wireVersion}, {wireVersion + 1, byte(kindAck), 0x80}, {wireVersion, 99, 0x80}, {wireVersion, byte(kindAck), 0xc1}} {
		if _, err := decodeMessage(bad); err == nil {
			t.Errorf("decoded %x", bad)
		}
	}
}

// A member whose Commit message was lost adopts the world once the leader's
// gossiped metadata shows the acked epoch committed; an ack whose leader is
// no longer the leader is forgotten.
func TestMemberAdoptsCommitFromGossip(t *testing.T) {
	w := *world(4, "n1", "n2")
	newR := func() *rendezvous {
		return &rendezvous{self: "n2", log: zap.NewNop(), opts: testOpts(),
			acked: &proposeMsg{Epoch: 4, LeaderID: "n1", JobHash: hashA, Peers: w.Peers}, ackedAt: time.Unix(100, 0)}
	}
	leader := mem("n1", StateReady, hashA)
	view := View{Self: "n2", Members: []Member{leader, mem("n2", StateReady, hashA)}}
	now := time.Unix(101, 0)

	r := newR()
	pw, d := Propose(view, nil, r.opts)
	if _, done, _ := r.memberStep(view, pw, d, now); done || r.acked == nil {
		t.Fatal("adopted before the leader's epoch showed the commit")
	}
	view.Members[0].Meta.Epoch = 4
	pw, d = Propose(view, nil, r.opts)
	got, done, err := r.memberStep(view, pw, d, now)
	if !done || err != nil || got.Epoch != 4 || got.Rank != 1 || got.Size != 2 {
		t.Fatalf("adopt: %+v %v %v", got, done, err)
	}

	r = newR()
	view.Members = append(view.Members, mem("n0", StateReady, hashA)) // a new leader
	pw, d = Propose(view, nil, r.opts)
	if _, done, _ := r.memberStep(view, pw, d, now); done || r.acked != nil {
		t.Fatal("kept an ack for a leader that no longer leads")
	}

	r = newR()
	view.Members = view.Members[:2]
	view.Members[0].Meta.Epoch = 0
	pw, d = Propose(view, nil, r.opts)
	if _, done, _ := r.memberStep(view, pw, d, now.Add(3*r.opts.AckTimeout)); done || r.acked != nil {
		t.Fatal("kept a stale ack")
	}
}

// A leader that restarted under its name (another incarnation) and reached
// the epoch we acked with a world of its own is not the leader we acked:
// its gossiped epoch does not commit our proposal.
func TestMemberDoesNotAdoptFromARestartedLeader(t *testing.T) {
	w := *world(4, "n1", "n2")
	r := &rendezvous{self: "n2", inc: 1, log: zap.NewNop(), opts: testOpts(),
		acked: &proposeMsg{Epoch: 4, LeaderID: "n1", JobHash: hashA, Peers: w.Peers}, ackedAt: time.Unix(100, 0)}
	leader := restarted(mem("n1", StateReady, hashA))
	leader.Meta.Epoch = 4
	view := View{Self: "n2", Members: []Member{leader, mem("n2", StateReady, hashA)}}
	pw, d := Propose(view, nil, r.opts)
	if got, done, _ := r.memberStep(view, pw, d, time.Unix(101, 0)); done {
		t.Fatalf("adopted %+v from the gossip of another process of the leader's name", got)
	}
}

// A Commit is taken only for the world we acked, peer for peer: a late one
// from an earlier process of the leader's name, under the acked epoch, is
// ignored.
func TestCommitMustMatchTheAckedProposal(t *testing.T) {
	w := *world(4, "n1", "n2")
	r := &rendezvous{self: "n2", inc: 1, log: zap.NewNop(), opts: testOpts(),
		acked: &proposeMsg{Epoch: 4, LeaderID: "n1", JobHash: hashA, Peers: w.Peers}, ackedAt: time.Unix(100, 0)}
	other := w
	other.Peers = slices.Clone(w.Peers)
	other.Peers[0].Inc = 2
	if got, done, _ := r.handle(inbound{kind: kindCommit, commit: &commitMsg{LeaderID: "n1", World: other}}, time.Unix(101, 0)); done {
		t.Fatalf("took a commit of another world under the acked epoch: %+v", got)
	}
	got, done, err := r.handle(inbound{kind: kindCommit, commit: &commitMsg{LeaderID: "n1", World: w}}, time.Unix(101, 0))
	if !done || err != nil || got.Epoch != 4 || got.Rank != 1 || !reflect.DeepEqual(got.Peers, w.Peers) {
		t.Fatalf("the acked world's commit: %+v %v %v", got, done, err)
	}
}

// What a member checks before it acks: its ack makes the leader count it,
// so the proposal must name this very process, and the member's own last
// world must keep its majority (by process).
func TestDeclineReason(t *testing.T) {
	tr := func(id string) Member { m := mem(id, StateTraining, hashA); m.Meta.Epoch = 4; return m }
	last := world(4, "n1", "n2", "n3")
	prop := func(peers ...Peer) *proposeMsg {
		return &proposeMsg{Epoch: 5, LeaderID: "n1", JobHash: hashA, Peers: peers}
	}
	p := func(id string, inc uint64) Peer { return Peer{ID: id, Endpoint: id + ":29500", Inc: inc} }
	view := View{Self: "n2", Members: []Member{tr("n1"), tr("n2"), restarted(mem("n3", StateReady, hashA))}}
	opts := RendezvousOptions{MinNodes: 1}
	cases := []struct {
		name   string
		p      *proposeMsg
		self   uint64
		last   *World
		view   View
		reason string
	}{
		{"the same processes", prop(p("n1", 1), p("n2", 1), p("n3", 2)), 1, last, view, ""},
		{"names another process of our name", prop(p("n1", 1), p("n2", 1), p("n3", 2)), 7, last, view,
			"the proposal names another process of our name (incarnation 0000000000000001, we are 0000000000000007)"},
		{"a leader of older code names no incarnation", prop(p("n1", 0), p("n2", 0), p("n3", 0)), 7, legacy(last), view, ""},
		{"a restarted name does not make a majority (the leader restarted too)",
			prop(p("n1", 2), p("n2", 1), p("n3", 2)), 1, last,
			View{Self: "n2", Members: []Member{restarted(mem("n1", StateReady, hashA)), tr("n2"), restarted(mem("n3", StateReady, hashA))}},
			"no majority of our last world (1 of 3; 2 restarted as a new process)"},
		{"not in the world", prop(p("n1", 1), p("n3", 2)), 1, last, view, "we are not in the proposed world"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := declineReason(c.p, "n2", c.self, hashA, c.view, c.last, opts); got != c.reason {
				t.Fatalf("reason %q, want %q", got, c.reason)
			}
		})
	}
	// A member started with --world-size 4 declines a first world of 2
	// proposed by a leader with another --world-size; not once the job has
	// a world, nor with --allow-minority.
	fresh := []Member{mem("n1", StateReady, hashA), mem("n2", StateReady, hashA)}
	ws := RendezvousOptions{MinNodes: 1, WorldSize: 4, Timeout: time.Minute}
	two := prop(p("n1", 1), p("n2", 1))
	if got, want := declineReason(two, "n2", 1, hashA, View{Self: "n2", Members: fresh, Elapsed: time.Hour}, nil, ws),
		"a first world of 2 nodes is no strict majority of our world-size (4)"; got != want {
		t.Errorf("first world of 2 of 4: reason %q, want %q", got, want)
	}
	if got := declineReason(two, "n2", 1, hashA, View{Self: "n2", Members: []Member{tr("n1"), fresh[1]}, Elapsed: time.Hour}, nil, ws); got != "" {
		t.Errorf("joining a started job: reason %q", got)
	}
	ws.AllowMinority = true
	if got := declineReason(two, "n2", 1, hashA, View{Self: "n2", Members: fresh, Elapsed: time.Hour}, nil, ws); got != "" {
		t.Errorf("with AllowMinority: reason %q", got)
	}
}
