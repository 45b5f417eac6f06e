package node

import (
	"reflect"
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
		{kindLeaving, &leavingMsg{ID: "n2"}, func(i inbound) any { return i.leaving }},
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
