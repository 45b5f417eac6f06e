package ring

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/peertune/peertune/collective"
)

// formRanks runs New for every config concurrently on pre-bound listeners
// and returns each rank's Comm (or error) and how long it took.
func formRanks(t *testing.T, cfgs []Config, log *zap.Logger) ([]*Comm, []error, []time.Duration) {
	t.Helper()
	n := len(cfgs)
	comms, errs, took := make([]*Comm, n), make([]error, n), make([]time.Duration, n)
	var wg sync.WaitGroup
	for r := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			comms[r], errs[r] = New(context.Background(), cfgs[r], log.With(zap.Int("test_rank", r)))
			took[r] = time.Since(start)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range comms {
			if c != nil {
				c.Close()
			}
		}
	})
	return comms, errs, took
}

// bind returns n listeners on ephemeral loopback ports and n configs using them.
func bind(t *testing.T, n int, base Config) ([]net.Listener, []Config) {
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
	cfgs := make([]Config, n)
	for i := range cfgs {
		cfgs[i] = base
		cfgs[i].Rank, cfgs[i].Size, cfgs[i].Peers, cfgs[i].Listener = i, n, peers, lns[i]
	}
	return lns, cfgs
}

func TestWrongSecret(t *testing.T) {
	checkLeaks(t)
	base := testConfig()
	base.ConnectTimeout = 2 * time.Second
	_, cfgs := bind(t, 3, base)
	cfgs[2].Secret = []byte("not-the-job-secret-at-all-000000")
	core, logs := observer.New(zap.WarnLevel)
	_, errs, took := formRanks(t, cfgs, zap.New(core))
	for r, err := range errs {
		if err == nil {
			t.Fatalf("rank %d formed a ring with a rank that has another secret", r)
		}
	}
	// Rank 2 dials rank 0, which is still accepting, and fails at once:
	// rank 0 cannot prove the secret rank 2 has. (Rank 1, which dials rank
	// 2, fails with ErrAuth too if it reaches rank 2 before rank 2 gives up,
	// or else when ConnectTimeout ends its retries: no assertion on it.)
	if !errors.Is(errs[2], ErrAuth) || !strings.Contains(errs[2].Error(), "secret") {
		t.Errorf("rank 2: want ErrAuth naming the secret, got %v", errs[2])
	}
	if took[2] > base.ConnectTimeout/2 {
		t.Errorf("rank 2 took %v to fail", took[2])
	}
	// Rank 0 never gets an authenticated left neighbour; its error says
	// why the attempt was refused, after ConnectTimeout.
	if !errors.Is(errs[0], ErrAuth) {
		t.Errorf("rank 0: want the refusal (ErrAuth) in its error, got %v", errs[0])
	}
	t.Logf("errors: %v", errs)
	// The accepting side logged why it refused the connection.
	refused := logs.FilterMessage("ring: refused inbound connection").All()
	if len(refused) == 0 {
		t.Fatalf("no refusal logged; logs: %v", logs.All())
	}
	for _, e := range refused {
		if msg := e.ContextMap()["error"].(string); !strings.Contains(msg, "secret") {
			t.Errorf("refusal log does not explain itself: %q", msg)
		}
	}
}

func TestWrongEpoch(t *testing.T) {
	checkLeaks(t)
	base := testConfig()
	base.ConnectTimeout = 1 * time.Second
	_, cfgs := bind(t, 2, base)
	cfgs[0].Epoch, cfgs[1].Epoch = 5, 4 // rank 1 is left over from an older world
	core, logs := observer.New(zap.WarnLevel)
	_, errs, took := formRanks(t, cfgs, zap.New(core))
	for r, err := range errs {
		if !errors.Is(err, ErrEpochMismatch) {
			t.Errorf("rank %d: want ErrEpochMismatch, got %v", r, err)
		}
		if !strings.Contains(err.Error(), "epoch") {
			t.Errorf("rank %d: error does not mention the epoch: %v", r, err)
		}
	}
	// The stale rank learns it is stale at once; the newer one waits (the
	// peer might catch up) until ConnectTimeout.
	if took[1] > 500*time.Millisecond {
		t.Errorf("stale rank took %v to fail", took[1])
	}
	if len(logs.FilterMessage("ring: refused inbound connection").All()) == 0 {
		t.Error("no refusal logged")
	}
	t.Logf("errors: %v", errs)
}

// TestStrangers: a client sending garbage, a silent client, and a client
// that speaks the protocol without the secret all connect before the real
// ring forms. None of them completes a handshake, none delays the ring, and
// the ring then works.
func TestStrangers(t *testing.T) {
	checkLeaks(t)
	base := testConfig()
	base.HandshakeTimeout = 3 * time.Second
	lns, cfgs := bind(t, 3, base)
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(core)

	// Rank 1 starts alone and is visited by strangers first.
	type res struct {
		c    *Comm
		err  error
		took time.Duration
	}
	r1 := make(chan res, 1)
	go func() {
		start := time.Now()
		c, err := New(context.Background(), cfgs[1], log)
		r1 <- res{c, err, time.Since(start)}
	}()
	garbage, err := net.Dial("tcp", lns[1].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	garbage.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	// The impostor claims to be rank 0 (rank 1's left neighbour) and speaks
	// the protocol, but with a guessed secret.
	conn, err := net.Dial("tcp", lns[1].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	err = dialHandshake(conn, &hsLocal{secret: []byte("guess"), epoch: base.Epoch, size: 3, rank: 0, seg: base.SegmentBytes / 4}, 1)
	conn.Close()
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("impostor: want ErrAuth, got %v", err)
	}
	// A silent client sits in rank 2's accept queue when rank 2 starts.
	silent, err := net.Dial("tcp", lns[2].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	comms, errs, took := formRanks(t, []Config{cfgs[0], cfgs[2]}, log)
	r := <-r1
	if r.c != nil {
		defer r.c.Close()
	}
	comms = []*Comm{comms[0], r.c, comms[1]}
	errs = []error{errs[0], r.err, errs[1]}
	took = []time.Duration{took[0], r.took, took[1]}
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if took[2] >= base.HandshakeTimeout {
		t.Errorf("rank 2 took %v: the silent stranger delayed the ring", took[2])
	}
	// Strangers' connections are closed: garbage at once, silence by the
	// time the ring has formed (its pending handshake is cancelled).
	for name, conn := range map[string]net.Conn{"garbage": garbage, "silent": silent} {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		// EOF, or a reset when the ring closed with our bytes unread.
		if _, err := io.ReadAll(conn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s client: connection not closed by the ring: %v", name, err)
		}
	}
	refused := logs.FilterMessage("ring: refused inbound connection").All()
	if len(refused) < 2 {
		t.Errorf("refusals not logged: %v", logs.All())
	}
	for _, e := range refused {
		t.Logf("logged: %s %v", e.Message, e.ContextMap()["error"])
	}

	bufs := [][]float32{{1, 2}, {10, 20}, {100, 200}}
	for r, err := range onAll(comms, func(r int, c *Comm) error {
		return c.AllReduceFloat32(context.Background(), bufs[r], collective.Sum)
	}) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	for r := range bufs {
		if !slices.Equal(bufs[r], []float32{111, 222}) {
			t.Fatalf("rank %d: %v", r, bufs[r])
		}
	}
}

// TestSilentStrangerTimesOut: a stranger holding a connection open without
// speaking is dropped after HandshakeTimeout, while the listener keeps
// accepting, and the real neighbour arriving later still gets in.
func TestSilentStrangerTimesOut(t *testing.T) {
	checkLeaks(t)
	base := testConfig()
	base.HandshakeTimeout = 300 * time.Millisecond
	_, cfgs := bind(t, 2, base)
	silent, err := net.Dial("tcp", cfgs[0].Peers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// Rank 0 alone for now: it accepts the silent stranger first.
	type res struct {
		c   *Comm
		err error
	}
	r0 := make(chan res, 1)
	go func() {
		c, err := New(context.Background(), cfgs[0], testLogger(t).WithOptions(zap.IncreaseLevel(zap.ErrorLevel)))
		r0 <- res{c, err}
	}()
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("silent stranger not dropped: %v", err)
	}
	if d := time.Since(start); d < base.HandshakeTimeout/2 || d > 2*time.Second {
		t.Errorf("silent stranger dropped after %v, want about %v", d, base.HandshakeTimeout)
	}
	c1, err := New(context.Background(), cfgs[1], testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	r := <-r0
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	comms := []*Comm{r.c, c1}
	for rank, err := range onAll(comms, func(_ int, c *Comm) error {
		return c.AllReduceFloat32(context.Background(), []float32{1}, collective.Sum)
	}) {
		if err != nil {
			t.Fatalf("rank %d: %v", rank, err)
		}
	}
}

// TestHandshakeReplay: replaying a genuine dialler's messages on a new
// connection does not authenticate, because the acceptor's nonce is fresh.
func TestHandshakeReplay(t *testing.T) {
	checkLeaks(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	acc := &hsLocal{secret: secret, epoch: 3, size: 2, rank: 1, seg: 256}
	dia := &hsLocal{secret: secret, epoch: 3, size: 2, rank: 0, seg: 256}

	// Record a genuine exchange.
	a, d := net.Pipe()
	rec := &recorder{Conn: d}
	errc := make(chan error, 1)
	go func() { errc <- acceptHandshake(a, acc) }()
	if err := dialHandshake(rec, dia, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	a.Close()
	d.Close()

	// Replay the dialler's bytes blindly to a fresh acceptor.
	a, d = net.Pipe()
	defer a.Close()
	defer d.Close()
	go func() { errc <- acceptHandshake(a, acc) }()
	go io.Copy(io.Discard, d)
	d.Write([]byte(rec.sent.String()))
	if err := <-errc; !errors.Is(err, ErrAuth) {
		t.Fatalf("replayed handshake: want ErrAuth, got %v", err)
	}
}

type recorder struct {
	net.Conn
	sent strings.Builder
}

func (r *recorder) Write(b []byte) (int, error) {
	r.sent.Write(b)
	return r.Conn.Write(b)
}

// TestSegmentMismatch: SegmentBytes shapes the frames, so ranks that
// disagree on it are refused at formation, at once, with a clear error.
func TestSegmentMismatch(t *testing.T) {
	checkLeaks(t)
	base := testConfig()
	base.ConnectTimeout = time.Second
	_, cfgs := bind(t, 2, base)
	cfgs[1].SegmentBytes = 4096
	_, errs, took := formRanks(t, cfgs, zap.NewNop())
	// The rank refused as a dialler fails at once. The other may find its
	// peer gone before its own hello is refused, and then fails when
	// ConnectTimeout ends its retries, naming the refusal it made itself.
	fast := false
	for r, err := range errs {
		if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "segment") {
			t.Errorf("rank %d: %v", r, err)
		}
		fast = fast || took[r] < base.ConnectTimeout/2
	}
	if !fast {
		t.Errorf("no rank failed fast: %v", took)
	}
	t.Logf("errors: %v", errs)
}
