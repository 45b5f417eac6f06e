package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/nccl"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cuda"
	"github.com/peertune/peertune/node"
)

// commGlue turns each world into the communicator that carries its
// gradients (--collective): NCCL for GPU buffers when libnccl is there,
// otherwise the TCP ring, through host memory when the buffers live on a
// GPU. It also carries the NCCL communicator of a world that lost peers over
// to the next world, so that the survivors can shrink it (ncclCommShrink)
// instead of making a new one.
//
// The ring of every world is always formed first: it is authenticated, and
// the ranks agree over it on how to make the communicator (see worldComm).
//
// One per process. Only the goroutine that runs the world loop uses it; the
// CommitToken hook runs there too, inside node.Rendezvous.
type commGlue struct {
	be     kernels.Backend
	gpu    *cuda.Backend // nil: the buffers are in host memory
	nccl   bool          // this process can carry gradients over NCCL
	forced bool          // --collective nccl: never fall back to the ring
	log    *zap.Logger

	// prev is the NCCL communicator of the last world, kept because that
	// world broke with a lost peer and prev can still shrink; prevWorld is
	// that world. worldComm uses it up (shrinks or closes it).
	prev      *nccl.Comm
	prevWorld node.World
}

// newCommGlue checks --collective against the backend and, where it
// matters, loads NCCL, so that a bad choice fails before joining the cluster.
func newCommGlue(choice string, be kernels.Backend, log *zap.Logger) (*commGlue, error) {
	gpu, _ := be.(*cuda.Backend)
	load := func() error { _, err := nccl.Default(); return err }
	use, why, err := chooseNCCL(choice, gpu != nil, be.Name(), load)
	if err != nil {
		return nil, err
	}
	if gpu != nil {
		log.Info("collective: "+why, zap.Bool("nccl", use))
	}
	return &commGlue{be: be, gpu: gpu, nccl: use, forced: use && choice == "nccl", log: log}, nil
}

// chooseNCCL decides from --collective whether this process carries
// gradients over NCCL: never for host buffers, always with "nccl" (which
// needs NCCL to load), and with "auto" when it loads. loadNCCL is called
// only where the answer depends on it. why says what was chosen and why,
// for the log.
func chooseNCCL(choice string, onGPU bool, backend string, loadNCCL func() error) (use bool, why string, err error) {
	switch choice {
	case "ring":
		return false, "TCP ring (--collective ring)", nil
	case "nccl":
		if !onGPU {
			return false, "", fmt.Errorf("--collective nccl needs --device cuda (backend is %s)", backend)
		}
		if err := loadNCCL(); err != nil {
			return false, "", fmt.Errorf("--collective nccl: %w", err)
		}
		return true, "NCCL (--collective nccl)", nil
	case "auto", "":
		if !onGPU {
			return false, "TCP ring (host buffers)", nil
		}
		if err := loadNCCL(); err != nil {
			return false, "TCP ring through host memory (NCCL not usable: " + err.Error() + ")", nil
		}
		return true, "NCCL (auto: GPU buffers and libnccl found)", nil
	}
	return false, "", fmt.Errorf("--collective %q: want auto, ring or nccl", choice)
}

// commitToken is the leader's node.RendezvousOptions.CommitToken: the NCCL
// unique id of the world it commits, which the Commit hands to every member.
// The leader is rank 0 of that world (node guarantees it) and stays alive
// while the ranks initialise, which ncclGetUniqueId needs: the id names a
// bootstrap socket its NCCL listens on in this process.
//
// When this leader will probably shrink the last world's communicator
// instead (see planShrink), it makes no id: an unused id would leave NCCL's
// bootstrap root thread listening for ranks that never come. Should the
// other ranks not agree to shrink, rank 0 then makes the id and sends it
// over the ring (worldComm). Nor does it make one when a member of w does
// not say it can use NCCL (Meta.NCCL, looked up in members): the world then
// runs on the ring, and should it use NCCL after all (a member of older
// code), rank 0 sends the id over the ring.
func (g *commGlue) commitToken(w node.World, members []node.Member) ([]byte, error) {
	if g.shrinkOffer(w) != 0 || !allNCCL(w, members) {
		return nil, nil
	}
	id, err := nccl.NewUniqueID()
	if err != nil {
		return nil, err
	}
	return nccl.MarshalID(id)
}

// allNCCL reports whether every peer of w is among members and says it can
// use NCCL.
func allNCCL(w node.World, members []node.Member) bool {
	for _, p := range w.Peers {
		i := slices.IndexFunc(members, func(m node.Member) bool { return m.ID == p.ID })
		if i < 0 || !members[i].Meta.NCCL {
			return false
		}
	}
	return true
}

// retire ends the communicator wc of world w, which stopped with err (the
// caller closes the ring). An NCCL communicator that broke because a peer
// was lost is kept for the next world when it can still shrink; any other
// is closed.
//
// stopping (the job's context is done) never keeps one: a kept
// communicator's kernel may still wait on the backend's stream for the lost
// peer, and stopping writes a checkpoint, which waits on that stream; only
// closing (aborting) the communicator ends the kernel.
func (g *commGlue) retire(wc collective.Communicator, w node.World, err error, stopping bool) {
	g.dropPrev()
	if c, ok := wc.(*nccl.Comm); ok && !stopping && errors.Is(err, collective.ErrPeerLost) && c.Shrinkable() {
		g.prev, g.prevWorld = c, w
		g.log.Info("collective: keeping the NCCL communicator to shrink it in the next world", zap.Uint64("epoch", w.Epoch))
		return
	}
	if _, isRing := wc.(*ring.Comm); wc != nil && !isRing {
		if err := wc.Close(); err != nil {
			g.log.Debug("close communicator", zap.Error(err))
		}
	}
}

// close releases a kept communicator, if any (the process is leaving).
func (g *commGlue) close() { g.dropPrev() }

func (g *commGlue) dropPrev() {
	if g.prev == nil {
		return
	}
	if err := g.prev.Close(); err != nil {
		g.log.Debug("close the last world's NCCL communicator", zap.Error(err))
	}
	g.prev = nil
}

// commPath is how a world gets its communicator.
type commPath int

const (
	// pathRing: the TCP ring (through host memory for GPU buffers).
	pathRing commPath = iota
	// pathShrink: ncclCommShrink of the last world's NCCL communicator.
	pathShrink
	// pathToken: a new NCCL communicator with the id from the commit.
	pathToken
	// pathBroadcast: a new NCCL communicator with an id rank 0 sends over
	// the ring.
	pathBroadcast
)

func (p commPath) String() string {
	switch p {
	case pathRing:
		return "ring"
	case pathShrink:
		return "nccl shrink"
	case pathToken:
		return "nccl init (id from the rendezvous)"
	case pathBroadcast:
		return "nccl init (id over the ring)"
	}
	return "path(" + strconv.Itoa(int(p)) + ")"
}

// offer is what one rank brings to the agreement on a world's communicator.
type offer struct {
	nccl   bool   // this rank can use NCCL
	token  uint64 // fingerprint of the NCCL id from the commit; 0: none
	shrink uint64 // fingerprint of the shrink this rank can do; 0: none
}

// An offer travels as offerWords float32 words holding 16 bits each, so
// that the ring's float sum carries it exactly: every rank fills its own
// row of a zeroed size x offerWords table and an all-reduce (sum) gives
// every rank the whole table.
const (
	offerNCCL   = 0 // 0 or 1
	offerToken  = 1 // 4 words, low 16 bits first
	offerShrink = 5 // 4 words
	offerWords  = 9
)

func (o offer) put(row []float32) {
	if o.nccl {
		row[offerNCCL] = 1
	}
	putUint64(row[offerToken:offerToken+4], o.token)
	putUint64(row[offerShrink:offerShrink+4], o.shrink)
}

// readOffer decodes a row; a malformed one (which only a bug could make)
// reads as an offer of nothing, so every rank still decides the same.
func readOffer(row []float32) offer {
	nc, ok1 := word16(row[offerNCCL])
	tok, ok2 := getUint64(row[offerToken : offerToken+4])
	sh, ok3 := getUint64(row[offerShrink : offerShrink+4])
	if !ok1 || !ok2 || !ok3 || nc > 1 {
		return offer{}
	}
	return offer{nccl: nc == 1, token: tok, shrink: sh}
}

func putUint64(words []float32, v uint64) {
	for i := range words {
		words[i] = float32(uint16(v >> (16 * i)))
	}
}

func getUint64(words []float32) (uint64, bool) {
	var v uint64
	for i, f := range words {
		u, ok := word16(f)
		if !ok {
			return 0, false
		}
		v |= uint64(u) << (16 * i)
	}
	return v, true
}

// word16 reads a float32 word that must hold an integer in [0, 65535].
func word16(f float32) (uint16, bool) {
	if f < 0 || f > 65535 || f != float32(uint16(f)) {
		return 0, false
	}
	return uint16(f), true
}

// decide is the agreement itself, a pure function of every rank's offer, so
// that every rank takes the same path: the ring unless every rank can use
// NCCL (noNCCL names those that cannot); else a shrink when every rank
// offers the same one; else the commit's id when every rank holds the same
// one; else an id broadcast from rank 0. fallback is where a shrink that
// fails on some rank goes instead (a token or the broadcast).
func decide(offers []offer) (path, fallback commPath, noNCCL []int) {
	sameNonZero := func(f func(offer) uint64) bool {
		v := f(offers[0])
		for _, o := range offers {
			if f(o) != v {
				return false
			}
		}
		return v != 0
	}
	for i, o := range offers {
		if !o.nccl {
			noNCCL = append(noNCCL, i)
		}
	}
	if len(offers) == 0 || len(noNCCL) > 0 {
		return pathRing, pathRing, noNCCL
	}
	fallback = pathBroadcast
	if sameNonZero(func(o offer) uint64 { return o.token }) {
		fallback = pathToken
	}
	if sameNonZero(func(o offer) uint64 { return o.shrink }) {
		return pathShrink, fallback, nil
	}
	return fallback, fallback, nil
}

// planShrink says whether the survivors of world old can make the
// communicator of world next by shrinking old's (ncclCommShrink) rather than
// initialising a new one, and which of old's ranks to exclude. That holds
// when next is a later world whose peers are exactly old's minus at least
// one, in the same relative order: NCCL keeps the survivors in order and
// closes the gaps (nccl.ShrunkRank), so each survivor's shrunk rank is its
// rank in next. A peer counts as the same only with the same ID and
// endpoint. Any other change (a joiner, a restarted process, a reordering)
// needs a new communicator. Every member of both worlds computes the same
// answer.
func planShrink(old, next node.World) (exclude []int, ok bool) {
	if next.Epoch <= old.Epoch || len(next.Peers) == 0 || len(next.Peers) >= len(old.Peers) {
		return nil, false
	}
	j := 0
	for i, p := range old.Peers {
		if j < len(next.Peers) && next.Peers[j] == p {
			j++
			continue
		}
		exclude = append(exclude, i)
	}
	if j != len(next.Peers) || len(exclude) == 0 {
		return nil, false
	}
	return exclude, true
}

// shrinkOffer is the fingerprint of the shrink this rank can do to make
// world w's communicator, or 0 when it cannot: it must hold the last world's
// NCCL communicator, still shrinkable, whose rank and size are that world's,
// and planShrink must map its rank onto its rank in w. The fingerprint
// covers both worlds and the exclude list, so equal offers mean the same
// shrink.
func (g *commGlue) shrinkOffer(w node.World) uint64 {
	if !g.nccl || g.prev == nil || !g.prev.Shrinkable() {
		return 0
	}
	old := g.prevWorld
	if g.prev.Rank() != old.Rank || g.prev.Size() != len(old.Peers) {
		return 0
	}
	exclude, ok := planShrink(old, w)
	if !ok || nccl.ShrunkRank(old.Rank, exclude) != w.Rank {
		return 0
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "shrink %d->%d excl %v:", old.Epoch, w.Epoch, exclude)
	for _, p := range old.Peers {
		fmt.Fprintf(h, "%q@%q,", p.ID, p.Endpoint)
	}
	return nonZero(h.Sum64())
}

// tokenOffer is the fingerprint of the NCCL id the commit gave this rank,
// or 0 when it has none (or one that does not decode).
func tokenOffer(w node.World) uint64 {
	if w.Token == nil {
		return 0
	}
	id, err := nccl.UnmarshalID(w.Token)
	if err != nil {
		return 0
	}
	h := fnv.New64a()
	h.Write(id[:])
	return nonZero(h.Sum64())
}

// nonZero keeps a fingerprint off 0, which means "none".
func nonZero(v uint64) uint64 { return max(v, 1) }

// worldComm makes the communicator of world w from its connected ring rc.
//
// The ranks first agree, over the ring, on how: each offers what it can do
// (use NCCL at all, the id from the commit, a shrink of the last world's
// communicator) and decide picks one path from all the offers. Deciding
// together is what keeps the ranks on one path, which NCCL needs (a rank
// initialising while another shrinks would hang both): no rank can tell on
// its own whether another lacks the commit's id (its Commit was lost and it
// adopted the world from gossip), cannot load NCCL, or no longer holds the
// old communicator. It costs one small all-reduce per world.
//
// The last world's kept communicator is used up either way: shrunk, or
// closed. A peer lost during any of this gives an error wrapping
// collective.ErrPeerLost: the caller forms a new world.
func (g *commGlue) worldComm(ctx context.Context, rc *ring.Comm, w node.World) (collective.Communicator, error) {
	defer g.dropPrev()
	start := time.Now()
	mine := offer{nccl: g.nccl}
	if g.nccl {
		mine.token, mine.shrink = tokenOffer(w), g.shrinkOffer(w)
	}
	offers, err := gatherOffers(ctx, rc, w, mine)
	if err != nil {
		return nil, err
	}
	path, fallback, noNCCL := decide(offers)
	recovery := g.prev != nil

	if path == pathRing {
		if g.forced {
			return nil, fmt.Errorf("--collective nccl: ranks %v of world %d cannot use NCCL (use --collective auto to fall back to the ring)", noNCCL, w.Epoch)
		}
		if g.nccl {
			g.log.Warn("collective: TCP ring: some ranks cannot use NCCL", zap.Ints("ranks", noNCCL))
		}
		if g.gpu != nil {
			return &collective.Staged{Comm: rc, Backend: g.be}, nil
		}
		return rc, nil
	}

	if path == pathShrink {
		c, err := g.shrink(ctx, rc, w)
		if err != nil {
			return nil, err
		}
		if c != nil {
			g.log.Info("collective: NCCL communicator shrunk for the new world", zap.String("path", path.String()),
				zap.Int("rank", w.Rank), zap.Int("size", w.Size), zap.Uint64("epoch", w.Epoch), zap.Duration("took", time.Since(start)))
			return c, nil
		}
		path = fallback
	}
	g.dropPrev() // before NCCL sets up a new communicator on the same device
	id, err := g.worldID(ctx, rc, w, path)
	if err != nil {
		return nil, err
	}
	cfg := nccl.DefaultConfig()
	cfg.Rank, cfg.Size, cfg.Epoch, cfg.ID = w.Rank, w.Size, w.Epoch, id
	cfg.Device = g.gpu.Device().Ordinal
	cfg.Context, cfg.Stream = g.gpu.Handles()
	c, err := nccl.New(ctx, cfg, g.log.Named("nccl"))
	if err != nil {
		return nil, err
	}
	g.log.Info("collective: NCCL", zap.String("path", path.String()), zap.Bool("recovery", recovery), zap.Bool("shrink_offered", mine.shrink != 0),
		zap.Int("rank", w.Rank), zap.Int("size", w.Size), zap.Uint64("epoch", w.Epoch), zap.Duration("took", time.Since(start)))
	return c, nil
}

// gatherOffers gives every rank of w every rank's offer, in rank order: an
// all-gather built from the ring's sum, each rank filling its own row of a
// zeroed table (adding zeros is exact).
func gatherOffers(ctx context.Context, rc *ring.Comm, w node.World, mine offer) ([]offer, error) {
	table := make([]float32, w.Size*offerWords)
	mine.put(table[w.Rank*offerWords : (w.Rank+1)*offerWords])
	if err := rc.AllReduceFloat32(ctx, table, collective.Sum); err != nil {
		return nil, fmt.Errorf("agree on the collective: %w", err)
	}
	offers := make([]offer, w.Size)
	for i := range offers {
		offers[i] = readOffer(table[i*offerWords : (i+1)*offerWords])
	}
	return offers, nil
}

// shrink makes w's communicator by shrinking the kept one, then confirms
// over the ring that every rank succeeded: a shrink that failed on one rank
// must not leave the others training on theirs. It returns (nil, nil) when
// some rank failed; the caller then makes a new communicator, as decide's
// fallback says.
func (g *commGlue) shrink(ctx context.Context, rc *ring.Comm, w node.World) (*nccl.Comm, error) {
	exclude, _ := planShrink(g.prevWorld, w) // the offers agreed: it holds
	c, err := g.prev.Shrink(ctx, exclude)
	if err == nil && (c.Rank() != w.Rank || c.Size() != w.Size) {
		err = fmt.Errorf("shrunk communicator has rank %d of %d, the world says %d of %d", c.Rank(), c.Size(), w.Rank, w.Size)
		c.Close()
		c = nil
	}
	failed := []float32{0}
	if err != nil {
		failed[0] = 1
		g.log.Warn("collective: NCCL shrink failed on this rank", zap.Ints("excluded", exclude), zap.Error(err))
	}
	if rerr := rc.AllReduceFloat32(ctx, failed, collective.Sum); rerr != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("confirm the NCCL shrink: %w", rerr)
	}
	if failed[0] != 0 {
		if c != nil {
			c.Close()
		}
		g.log.Warn("collective: NCCL shrink failed; making a new communicator", zap.Float32("ranks_failed", failed[0]))
		return nil, nil
	}
	return c, nil
}

// worldID is the NCCL id of w's new communicator: the commit's (path
// pathToken), or rank 0's sent over the ring (pathBroadcast). Rank 0 sends
// the commit's id when it has one (it made it, as the leader: its bootstrap
// root is already listening), else a new one.
func (g *commGlue) worldID(ctx context.Context, rc *ring.Comm, w node.World, path commPath) ([nccl.IDBytes]byte, error) {
	var id [nccl.IDBytes]byte
	if path == pathToken {
		return nccl.UnmarshalID(w.Token) // the offers agreed: it decodes
	}
	if w.Rank == 0 {
		var err error
		if id, err = nccl.UnmarshalID(w.Token); err != nil {
			if id, err = nccl.NewUniqueID(); err != nil {
				return id, err
			}
		}
	}
	words := idWords(id)
	if err := rc.BroadcastFloat32(ctx, words, 0); err != nil {
		return id, fmt.Errorf("hand out the NCCL id: %w", err)
	}
	return wordsID(words)
}

// idWords packs an NCCL id into float32 words of 16 bits each, which the
// ring carries exactly.
func idWords(id [nccl.IDBytes]byte) []float32 {
	words := make([]float32, nccl.IDBytes/2)
	for i := range words {
		words[i] = float32(uint16(id[2*i]) | uint16(id[2*i+1])<<8)
	}
	return words
}

// wordsID undoes idWords.
func wordsID(words []float32) ([nccl.IDBytes]byte, error) {
	var id [nccl.IDBytes]byte
	if len(words) != nccl.IDBytes/2 {
		return id, fmt.Errorf("NCCL id of %d words, want %d", len(words), nccl.IDBytes/2)
	}
	for i, f := range words {
		u, ok := word16(f)
		if !ok {
			return id, fmt.Errorf("NCCL id word %d is %v, not a 16-bit value", i, f)
		}
		id[2*i], id[2*i+1] = byte(u), byte(u>>8)
	}
	return id, nil
}
