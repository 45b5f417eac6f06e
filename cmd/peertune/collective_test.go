package main

import (
	"context"
	"errors"
	"math"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/nccl"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/node"
)

func TestChooseNCCL(t *testing.T) {
	noLib := errors.New("libnccl.so.2 not found")
	for _, c := range []struct {
		choice  string
		onGPU   bool
		loadErr error
		use     bool
		err     string // substring; "" = no error
		loads   bool   // loadNCCL should be consulted
	}{
		{"ring", true, nil, false, "", false},
		{"ring", false, nil, false, "", false},
		{"auto", false, nil, false, "", false},
		{"", false, nil, false, "", false},
		{"auto", true, nil, true, "", true},
		{"auto", true, noLib, false, "", true},
		{"nccl", true, nil, true, "", true},
		{"nccl", true, noLib, false, "libnccl.so.2 not found", true},
		{"nccl", false, nil, false, "needs --device cuda (backend is cpu)", false},
		{"gloo", true, nil, false, `--collective "gloo": want auto, ring or nccl`, false},
	} {
		loaded := false
		use, why, err := chooseNCCL(c.choice, c.onGPU, "cpu", func() error { loaded = true; return c.loadErr })
		name := c.choice + map[bool]string{true: "/gpu", false: "/host"}[c.onGPU]
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want %q", name, err, c.err)
		case use != c.use:
			t.Errorf("%s: use NCCL %v, want %v", name, use, c.use)
		case loaded != c.loads:
			t.Errorf("%s: loaded NCCL %v, want %v", name, loaded, c.loads)
		case err == nil && why == "":
			t.Errorf("%s: no reason for the log", name)
		}
		if c.choice == "auto" && c.onGPU && c.loadErr != nil && !strings.Contains(why, "not found") {
			t.Errorf("auto fallback does not say why: %q", why)
		}
	}
}

func testWorld(epoch uint64, self string, ids ...string) node.World {
	w := node.World{Epoch: epoch, Size: len(ids), Rank: -1}
	for i, id := range ids {
		w.Peers = append(w.Peers, node.Peer{ID: id, Endpoint: "10.0.0.1:" + id})
		if id == self {
			w.Rank = i
		}
	}
	return w
}

func TestPlanShrink(t *testing.T) {
	old := testWorld(5, "", "a", "b", "c", "d")
	restarted := testWorld(6, "", "a", "b", "c")
	restarted.Peers[2].Endpoint = "10.0.0.2:c" // same name, new process
	for _, c := range []struct {
		name    string
		next    node.World
		exclude []int
		ok      bool
	}{
		{"last lost", testWorld(6, "", "a", "b", "c"), []int{3}, true},
		{"rank 0 lost", testWorld(6, "", "b", "c", "d"), []int{0}, true},
		{"middle lost", testWorld(6, "", "a", "c", "d"), []int{1}, true},
		{"two lost", testWorld(7, "", "a", "d"), []int{1, 2}, true},
		{"one survivor", testWorld(9, "", "c"), []int{0, 1, 3}, true},
		{"nobody lost", testWorld(6, "", "a", "b", "c", "d"), nil, false},
		{"a joiner", testWorld(6, "", "a", "b", "c", "e"), nil, false},
		{"a joiner replaces the lost", testWorld(6, "", "a", "b", "c", "cc"), nil, false},
		{"grew", testWorld(6, "", "a", "b", "c", "d", "e"), nil, false},
		{"reordered", testWorld(6, "", "b", "a", "c"), nil, false},
		{"restarted under the same name", restarted, nil, false},
		{"same epoch", testWorld(5, "", "a", "b", "c"), nil, false},
		{"older epoch", testWorld(4, "", "a", "b", "c"), nil, false},
		{"empty", testWorld(6, ""), nil, false},
	} {
		ex, ok := planShrink(old, c.next)
		if ok != c.ok || !reflect.DeepEqual(ex, c.exclude) {
			t.Errorf("%s: planShrink = %v %v, want %v %v", c.name, ex, ok, c.exclude, c.ok)
			continue
		}
		if !ok {
			continue
		}
		// The contract with NCCL: each survivor's shrunk rank is its rank
		// in the new world; each excluded rank is gone from it.
		for r, p := range old.Peers {
			want := node.Rank(c.next, p.ID)
			if got := nccl.ShrunkRank(r, ex); got != want {
				t.Errorf("%s: %s (old rank %d) shrinks to rank %d, the new world has it at %d", c.name, p.ID, r, got, want)
			}
		}
	}
}

func TestDecide(t *testing.T) {
	const tok, tok2, sh, sh2 = 0x1111, 0x2222, 0x3333, 0x4444
	all := func(o offer, n int) []offer {
		out := make([]offer, n)
		for i := range out {
			out[i] = o
		}
		return out
	}
	with := func(os []offer, i int, o offer) []offer { os[i] = o; return os }
	for _, c := range []struct {
		name     string
		offers   []offer
		path     commPath
		fallback commPath
		noNCCL   []int
	}{
		{"cpu world", all(offer{}, 3), pathRing, pathRing, []int{0, 1, 2}},
		{"one rank without NCCL", with(all(offer{nccl: true, token: tok, shrink: sh}, 3), 1, offer{}), pathRing, pathRing, []int{1}},
		{"every rank has the commit's id", all(offer{nccl: true, token: tok}, 3), pathToken, pathToken, nil},
		{"a commit was lost", with(all(offer{nccl: true, token: tok}, 3), 2, offer{nccl: true}), pathBroadcast, pathBroadcast, nil},
		{"the leader made no id", all(offer{nccl: true}, 2), pathBroadcast, pathBroadcast, nil},
		{"ids differ", with(all(offer{nccl: true, token: tok}, 2), 1, offer{nccl: true, token: tok2}), pathBroadcast, pathBroadcast, nil},
		{"every rank can shrink", all(offer{nccl: true, shrink: sh}, 3), pathShrink, pathBroadcast, nil},
		{"shrink, ids as fallback", all(offer{nccl: true, token: tok, shrink: sh}, 3), pathShrink, pathToken, nil},
		{"one rank cannot shrink", with(all(offer{nccl: true, token: tok, shrink: sh}, 3), 0, offer{nccl: true, token: tok}), pathToken, pathToken, nil},
		{"a joiner cannot shrink", with(all(offer{nccl: true, shrink: sh}, 3), 2, offer{nccl: true}), pathBroadcast, pathBroadcast, nil},
		{"shrinks differ", with(all(offer{nccl: true, shrink: sh}, 2), 1, offer{nccl: true, shrink: sh2}), pathBroadcast, pathBroadcast, nil},
		{"world of one", all(offer{nccl: true, token: tok}, 1), pathToken, pathToken, nil},
		{"no offers", nil, pathRing, pathRing, nil},
	} {
		path, fallback, noNCCL := decide(c.offers)
		if path != c.path || fallback != c.fallback || !reflect.DeepEqual(noNCCL, c.noNCCL) {
			t.Errorf("%s: decide = %v, %v, %v; want %v, %v, %v", c.name, path, fallback, noNCCL, c.path, c.fallback, c.noNCCL)
		}
	}
}

// Offers survive the trip through the ring's float sum exactly, whatever
// their bits; a malformed row reads as an offer of nothing.
func TestOfferEncoding(t *testing.T) {
	offers := []offer{
		{nccl: true, token: math.MaxUint64, shrink: 1},
		{},
		{nccl: true, token: 0x8000_0001_fffe_0000, shrink: 0x0123_4567_89ab_cdef},
		{nccl: false, token: 42},
	}
	table := make([]float32, len(offers)*offerWords)
	for r, o := range offers {
		part := make([]float32, len(table)) // one rank's contribution
		o.put(part[r*offerWords : (r+1)*offerWords])
		for i := range table {
			table[i] += part[i]
		}
	}
	for r, want := range offers {
		if got := readOffer(table[r*offerWords : (r+1)*offerWords]); got != want {
			t.Errorf("rank %d: %+v, want %+v", r, got, want)
		}
	}
	for _, bad := range [][]float32{
		{2, 0, 0, 0, 0, 0, 0, 0, 0},
		{1, 0.5, 0, 0, 0, 0, 0, 0, 0},
		{1, 0, 0, 0, 0, 65536, 0, 0, 0},
		{1, float32(math.NaN()), 0, 0, 0, 0, 0, 0, 0},
		{1, -1, 0, 0, 0, 0, 0, 0, 0},
	} {
		if got := readOffer(bad); got != (offer{}) {
			t.Errorf("malformed %v read as %+v", bad, got)
		}
	}
}

func TestIDWords(t *testing.T) {
	var id [nccl.IDBytes]byte
	for i := range id {
		id[i] = byte(255 - i*7)
	}
	got, err := wordsID(idWords(id))
	if err != nil || got != id {
		t.Fatalf("round trip: %v %x", err, got)
	}
	w := idWords(id)
	w[3] = 1.5
	if _, err := wordsID(w); err == nil {
		t.Error("a fractional word decoded")
	}
	if _, err := wordsID(w[:10]); err == nil {
		t.Error("a short id decoded")
	}
}

// tokenFor is a msgpack'd NCCL id as the leader's commit would carry it.
func tokenFor(t *testing.T, seed byte) []byte {
	t.Helper()
	var id [nccl.IDBytes]byte
	for i := range id {
		id[i] = seed + byte(i)
	}
	b, err := nccl.MarshalID(id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loopbackRing forms a real TCP ring of n ranks on 127.0.0.1.
func loopbackRing(t *testing.T, n int, epoch uint64) []*ring.Comm {
	t.Helper()
	lns := make([]net.Listener, n)
	peers := make([]string, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], peers[i] = ln, ln.Addr().String()
	}
	comms := make([]*ring.Comm, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range comms {
		wg.Go(func() {
			cfg := ring.DefaultConfig()
			cfg.Rank, cfg.Size, cfg.Epoch, cfg.Peers = i, n, epoch, peers
			cfg.Listener, cfg.Secret = lns[i], []byte("a test secret of 32 bytes, okay")
			cfg.ConnectTimeout = 10 * time.Second
			comms[i], errs[i] = ring.New(context.Background(), cfg, nil)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
		t.Cleanup(func() { comms[i].Close() })
	}
	return comms
}

// The cmd-side choice of where the NCCL id comes from, over a real ring:
// when every rank got the commit's id they all use it; when one rank's
// commit was lost (it adopted the world from
// gossip, so it has no token) every rank takes rank 0's id over the ring,
// and all end with the same id, the one rank 0 made as leader.
func TestNCCLIDPathAgreedOverRing(t *testing.T) {
	lead := tokenFor(t, 1)
	leadID, _ := nccl.UnmarshalID(lead)
	for _, c := range []struct {
		name   string
		tokens [][]byte
		path   commPath
	}{
		{"all have the token", [][]byte{lead, lead, lead}, pathToken},
		{"rank 2 lost its commit", [][]byte{lead, lead, nil}, pathBroadcast},
		{"rank 1 has a garbled token", [][]byte{lead, {0xc4, 1, 2}, lead}, pathBroadcast},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := len(c.tokens)
			comms := loopbackRing(t, n, 7)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			paths := make([]commPath, n)
			ids := make([][nccl.IDBytes]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for r := range n {
				wg.Go(func() {
					w := testWorld(7, string(rune('a'+r)), "a", "b", "c")
					w.Token = c.tokens[r]
					g := &commGlue{nccl: true}
					mine := offer{nccl: true, token: tokenOffer(w), shrink: g.shrinkOffer(w)}
					offers, err := gatherOffers(ctx, comms[r], w, mine)
					if err != nil {
						errs[r] = err
						return
					}
					paths[r], _, _ = decide(offers)
					ids[r], errs[r] = g.worldID(ctx, comms[r], w, paths[r])
				})
			}
			wg.Wait()
			for r := range n {
				if errs[r] != nil {
					t.Fatalf("rank %d: %v", r, errs[r])
				}
				if paths[r] != c.path {
					t.Errorf("rank %d took %v, want %v", r, paths[r], c.path)
				}
				if ids[r] != leadID {
					t.Errorf("rank %d has id %x…, want the leader's %x…", r, ids[r][:8], leadID[:8])
				}
			}
		})
	}
}

// Without a kept communicator a rank offers no shrink, whatever the worlds.
func TestShrinkOfferNeedsKeptComm(t *testing.T) {
	g := &commGlue{nccl: true, prevWorld: testWorld(5, "a", "a", "b", "c")}
	if got := g.shrinkOffer(testWorld(6, "a", "a", "b")); got != 0 {
		t.Fatalf("offered shrink %x without a communicator", got)
	}
	if tok := (&commGlue{}).shrinkOffer(testWorld(6, "a", "a")); tok != 0 {
		t.Fatal("a ring-only process offered a shrink")
	}
}

// A world where some rank cannot use NCCL uses the ring on every rank, and
// a rank started with --collective nccl says which ranks could not.
func TestWorldCommMixedFallsBackToRing(t *testing.T) {
	comms := loopbackRing(t, 3, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	glues := []*commGlue{
		{nccl: true, forced: true, log: zap.NewNop()}, // a GPU rank that insists
		{nccl: true, log: zap.NewNop()},               // a GPU rank on auto
		{log: zap.NewNop()},                           // a CPU rank
	}
	got := make([]collective.Communicator, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			w := testWorld(4, string(rune('a'+r)), "a", "b", "c")
			w.Token = tokenFor(t, 9)
			got[r], errs[r] = glues[r].worldComm(ctx, comms[r], w)
		})
	}
	wg.Wait()
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "--collective nccl: ranks [2] of world 4 cannot use NCCL") {
		t.Errorf("forced rank: %v", errs[0])
	}
	for r := 1; r < 3; r++ {
		if errs[r] != nil || got[r] != collective.Communicator(comms[r]) {
			t.Errorf("rank %d: %v, %T; want its ring", r, errs[r], got[r])
		}
	}
}

// The leader's hook makes a real NCCL id (libnccl, no GPU needed) in the
// msgpack form the members decode, and every rank offers the same
// fingerprint for it.
func TestNCCLCommitTokenIsUniqueID(t *testing.T) {
	if _, err := nccl.Default(); err != nil {
		t.Skipf("NCCL not installed (scripts/install-pydeps.sh installs it): %v", err)
	}
	g := &commGlue{nccl: true, log: zap.NewNop()}
	w := testWorld(3, "a", "a", "b")
	capable := func(id string, nccl bool) node.Member {
		return node.Member{ID: id, Alive: true, Meta: node.Meta{ID: id, NCCL: nccl}}
	}
	// A member that cannot use NCCL (or is unknown): no id, so no NCCL
	// bootstrap thread waits for ranks that never come.
	for _, ms := range [][]node.Member{{capable("a", true), capable("b", false)}, {capable("a", true)}} {
		if tok, err := g.commitToken(w, ms); err != nil || tok != nil {
			t.Fatalf("members %+v: token %x, err %v; want none", ms, tok, err)
		}
	}
	tok, err := g.commitToken(w, []node.Member{capable("a", true), capable("b", true), capable("c", false)})
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) == 0 || len(tok) > node.MaxTokenLen {
		t.Fatalf("token of %d bytes", len(tok))
	}
	id, err := nccl.UnmarshalID(tok)
	if err != nil || id == ([nccl.IDBytes]byte{}) {
		t.Fatalf("token is not an NCCL id: %v", err)
	}
	w.Token = tok
	member := testWorld(3, "b", "a", "b")
	member.Token = append([]byte(nil), tok...)
	if a, b := tokenOffer(w), tokenOffer(member); a == 0 || a != b {
		t.Fatalf("offers %x and %x for the same id", a, b)
	}
	if tokenOffer(testWorld(3, "b", "a", "b")) != 0 {
		t.Fatal("a rank without a token offered one")
	}
}
