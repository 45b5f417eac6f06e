package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// tokenCall is one call of a CommitToken hook: which node's hook ran, with
// which world, and what it returned.
type tokenCall struct {
	node  string
	world World
	token []byte
}

// tokenRecorder makes per-node CommitToken hooks that return a fresh random
// token (the size of a msgpack'd NCCL id) and record every call.
type tokenRecorder struct {
	mu    sync.Mutex
	calls []tokenCall
	fail  error // when set, every hook returns it
}

func (tr *tokenRecorder) hook(id string) func(World) ([]byte, error) {
	return func(w World) ([]byte, error) {
		tok := make([]byte, 130)
		_, _ = rand.Read(tok)
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.calls = append(tr.calls, tokenCall{node: id, world: w, token: tok})
		if tr.fail != nil {
			return nil, tr.fail
		}
		return tok, nil
	}
}

func (tr *tokenRecorder) take() []tokenCall {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	c := tr.calls
	tr.calls = nil
	return c
}

// rendezvousWithHooks runs Rendezvous on every node, each with its own hook.
func rendezvousWithHooks(ctx context.Context, opts RendezvousOptions, last *World, tr *tokenRecorder, ns ...*testNode) map[string]result {
	var mu sync.Mutex
	out := map[string]result{}
	var wg sync.WaitGroup
	for _, n := range ns {
		o := opts
		o.CommitToken = tr.hook(n.ID())
		wg.Go(func() {
			w, err := Rendezvous(ctx, n.Node, last, o)
			mu.Lock()
			out[n.ID()] = result{n.ID(), w, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// The leader's hook runs once per committed world, on rank 0 of that world,
// and the token it made arrives byte for byte on every member; the next world
// (after a node left) gets a new token from its own leader.
func TestCommitTokenReachesEveryMember(t *testing.T) {
	ns := cluster(t, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 3
	tr := &tokenRecorder{}

	check := func(res map[string]result, members ...string) World {
		t.Helper()
		checkOneWorld(t, res, members...)
		calls := tr.take()
		if len(calls) != 1 {
			t.Fatalf("CommitToken called %d times, want once: %+v", len(calls), calls)
		}
		c := calls[0]
		w := res[members[0]].w
		if c.node != w.Peers[0].ID || c.world.Rank != 0 || c.world.Epoch != w.Epoch || strings.Join(ids(c.world), ",") != strings.Join(ids(w), ",") {
			t.Fatalf("hook ran on %s with world %d %v rank %d; committed world %d %v", c.node, c.world.Epoch, ids(c.world), c.world.Rank, w.Epoch, ids(w))
		}
		for _, id := range members {
			if got := res[id].w.Token; !bytes.Equal(got, c.token) {
				t.Fatalf("%s: token %x, want the leader's %x", id, got, c.token)
			}
		}
		return w
	}

	first := check(rendezvousWithHooks(ctx, opts, nil, tr, ns...), "n1", "n2", "n3")
	if first.Peers[0].ID != "n1" {
		t.Fatalf("rank 0 is %s", first.Peers[0].ID)
	}

	if err := ns[0].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n1 gone", func() bool { return len(ns[1].Members()) == 2 && len(ns[2].Members()) == 2 })
	opts.MinNodes = 1
	second := check(rendezvousWithHooks(ctx, opts, &first, tr, ns[1:]...), "n2", "n3")
	if second.Peers[0].ID != "n2" || bytes.Equal(second.Token, first.Token) {
		t.Fatalf("second world %v reused the first token or has the wrong rank 0", ids(second))
	}
}

// A failing hook does not stop the world: it commits without a token on
// every member, and the leader says why.
func TestCommitTokenErrorCommitsWithout(t *testing.T) {
	ns := cluster(t, "n1", "n2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := testOpts()
	opts.MinNodes = 2
	tr := &tokenRecorder{fail: errors.New("no libnccl")}
	res := rendezvousWithHooks(ctx, opts, nil, tr, ns...)
	checkOneWorld(t, res, "n1", "n2")
	for id, r := range res {
		if r.w.Token != nil {
			t.Errorf("%s has token %x", id, r.w.Token)
		}
	}
	if len(tr.take()) != 1 {
		t.Error("hook not called exactly once")
	}
	if !hasLog(ns[0].logs, zapcore.WarnLevel, "commit token not made; committing without one") {
		t.Error("leader did not log the failed hook")
	}
}

// commitToken: no hook, an oversized or empty token, and a leader that is
// not rank 0 (which cannot happen today) all give no token.
func TestCommitTokenGuards(t *testing.T) {
	w := *world(7, "n1", "n2")
	w.Rank = 0
	r := &rendezvous{self: "n1", log: zap.NewNop(), opts: testOpts()}
	if tok := r.commitToken(w); tok != nil {
		t.Fatalf("no hook gave %x", tok)
	}
	for _, c := range []struct {
		name string
		rank int
		tok  []byte
		want bool
	}{
		{"ok", 0, []byte("id"), true},
		{"at the limit", 0, make([]byte, MaxTokenLen), true},
		{"oversized", 0, make([]byte, MaxTokenLen+1), false},
		{"empty", 0, []byte{}, false},
		{"leader not rank 0", 1, []byte("id"), false},
	} {
		called := false
		r.opts.CommitToken = func(World) ([]byte, error) { called = true; return c.tok, nil }
		w.Rank = c.rank
		got := r.commitToken(w)
		if (got != nil) != c.want || (c.want && !bytes.Equal(got, c.tok)) {
			t.Errorf("%s: got %d bytes, want token %v", c.name, len(got), c.want)
		}
		if c.rank != 0 && called {
			t.Errorf("%s: hook called", c.name)
		}
	}
}

// A member takes the token from the Commit it acked; an oversized one is
// dropped rather than handed on. A member that adopts the world from gossip
// (its Commit lost) has no token: the caller must notice and agree with its
// peers (cmd falls back to handing the NCCL id out over the ring).
func TestMemberTokenFromCommitOnly(t *testing.T) {
	w := *world(4, "n1", "n2")
	newR := func() *rendezvous {
		return &rendezvous{self: "n2", log: zap.NewNop(), opts: testOpts(),
			acked: &proposeMsg{Epoch: 4, LeaderID: "n1", JobHash: hashA, Peers: w.Peers}, ackedAt: time.Now()}
	}
	for _, c := range []struct {
		tok  []byte
		want []byte
	}{
		{[]byte("nccl id"), []byte("nccl id")},
		{make([]byte, MaxTokenLen+1), nil},
		{nil, nil},
		{[]byte{}, nil},
	} {
		cw := w
		cw.Token = c.tok
		b, err := encodeMessage(kindCommit, &commitMsg{LeaderID: "n1", World: cw})
		if err != nil {
			t.Fatal(err)
		}
		in, err := decodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		got, done, err := newR().handle(in, time.Now())
		if !done || err != nil || got.Rank != 1 || got.Epoch != 4 {
			t.Fatalf("commit not joined: %+v %v %v", got, done, err)
		}
		if !bytes.Equal(got.Token, c.want) || (c.want == nil) != (got.Token == nil) {
			t.Errorf("token of %d bytes: got %d bytes, want %d", len(c.tok), len(got.Token), len(c.want))
		}
	}

	r := newR()
	leader := mem("n1", StateReady, hashA)
	leader.Meta.Epoch = 4
	view := View{Self: "n2", Members: []Member{leader, mem("n2", StateReady, hashA)}}
	pw, d := Propose(view, nil, r.opts)
	got, done, err := r.memberStep(view, pw, d, time.Now())
	if !done || err != nil || got.Epoch != 4 {
		t.Fatalf("adopt: %+v %v %v", got, done, err)
	}
	if got.Token != nil {
		t.Fatalf("adopted world has token %x", got.Token)
	}
}
