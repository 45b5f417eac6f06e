package ring

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// The handshake authenticates both ends of a ring connection before any data
// flows. The dialler D is the acceptor A's left neighbour.
//
//	D -> A  "PTRING\x00\x01" (protocol magic and version), then
//	        hello     {epoch, size, seg, from=D, to=A, nonceD}
//	A -> D  challenge {epoch, size, seg, from=A, to=D, nonceA, macA}   or reject
//	D -> A  proof     {macD}                                      or reject
//	A -> D  accept                                                or reject
//
//	macX = HMAC-SHA256(secret, label(X) | epoch | size | seg | D | A | nonceD | nonceA)
//
// seg is the segment size in elements: it shapes the data frames, so both
// ends must agree on it, and a mismatch is refused here rather than found as
// a desync in the first collective.
//
// with distinct labels for the acceptor's and the dialler's proof, so neither
// can be replayed as the other. Each side's MAC covers the other side's fresh
// random nonce, so a recorded handshake cannot be replayed either. D checks
// macA before it computes its own proof, so a stranger posing as A learns no
// dialler MAC; A reveals macA before D has proved anything, but only for a
// nonce pair that includes A's own fresh nonceA and under the acceptor label,
// which is useless to forge a dialler's proof. The epoch (and ranks and size)
// are inside the MACs, and also compared in clear first, so a peer from
// another epoch gets an error that says exactly that.
//
// Messages are framed as type (1 byte), body length (uint16 LE), body, and
// bodies are fixed-layout little-endian, with a small length cap, so a
// stranger's garbage costs a few bytes of memory and is rejected at once.

const (
	protoMagic = "PTRING\x00\x01"
	nonceLen   = 32
	macLen     = sha256.Size
	maxMsgLen  = 512
	maxReason  = 300

	msgHello     = 1
	msgChallenge = 2
	msgProof     = 3
	msgAccept    = 4
	msgReject    = 5

	helloLen     = 8 + 4 + 4 + 4 + 4 + nonceLen
	challengeLen = helloLen + macLen

	labelAccept = "peertune/ring/v1/acceptor"
	labelDial   = "peertune/ring/v1/dialler"
)

// Reject codes, so the dialler can tell a stale epoch from a wrong secret.
const (
	rejectEpoch    = 1
	rejectAuth     = 2
	rejectTopology = 3
	rejectProtocol = 4
)

// Errors of ring formation, for errors.Is.
var (
	// ErrAuth: the peer failed to prove knowledge of the job secret (or
	// rejected this rank's proof): the secrets differ, or it is not a peer.
	ErrAuth = errors.New("ring: authentication failed")
	// ErrEpochMismatch: the peer is in another epoch (another world).
	ErrEpochMismatch = errors.New("ring: epoch mismatch")
	// ErrHandshake: the peer does not speak the protocol, or disagrees on
	// the ring's size or on who its neighbour is.
	ErrHandshake = errors.New("ring: handshake failed")
	// ErrDesync: a data frame was not the one the schedule expects: the
	// ranks disagree on the sequence of collectives, the buffer length, the
	// op or the root. This is a bug in the caller, not a network failure.
	ErrDesync = errors.New("ring: ranks out of step")
)

// hsLocal is what one end knows: the secret, the epoch and its place in the ring.
type hsLocal struct {
	secret     []byte
	epoch      uint64
	size, rank int
	seg        int // segment size in elements
}

// hello is both the hello and the challenge body (the challenge adds a MAC).
type hello struct {
	epoch     uint64
	size, seg uint32
	from, to  uint32
	nonce     [nonceLen]byte
}

func (h *hello) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.epoch)
	le.PutUint32(b[8:], h.size)
	le.PutUint32(b[12:], h.seg)
	le.PutUint32(b[16:], h.from)
	le.PutUint32(b[20:], h.to)
	copy(b[24:], h.nonce[:])
}

func parseHello(b []byte) hello {
	le := binary.LittleEndian
	var h hello
	h.epoch = le.Uint64(b[0:])
	h.size = le.Uint32(b[8:])
	h.seg = le.Uint32(b[12:])
	h.from = le.Uint32(b[16:])
	h.to = le.Uint32(b[20:])
	copy(h.nonce[:], b[24:])
	return h
}

func (l *hsLocal) mac(label string, dialler, acceptor int, nonceD, nonceA *[nonceLen]byte) []byte {
	m := hmac.New(sha256.New, l.secret)
	var b [8 + 4 + 4 + 4 + 4]byte
	binary.LittleEndian.PutUint64(b[0:], l.epoch)
	binary.LittleEndian.PutUint32(b[8:], uint32(l.size))
	binary.LittleEndian.PutUint32(b[12:], uint32(l.seg))
	binary.LittleEndian.PutUint32(b[16:], uint32(dialler))
	binary.LittleEndian.PutUint32(b[20:], uint32(acceptor))
	m.Write([]byte(label))
	m.Write(b[:])
	m.Write(nonceD[:])
	m.Write(nonceA[:])
	return m.Sum(nil)
}

func writeMsg(w io.Writer, typ byte, body []byte) error {
	b := make([]byte, 3+len(body))
	b[0] = typ
	binary.LittleEndian.PutUint16(b[1:], uint16(len(body)))
	copy(b[3:], body)
	_, err := w.Write(b)
	return err
}

func readMsg(r io.Reader) (typ byte, body []byte, err error) {
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.LittleEndian.Uint16(h[1:]))
	if n > maxMsgLen {
		return 0, nil, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrHandshake, n, maxMsgLen)
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h[0], body, nil
}

// sendReject tells the peer why, best effort (it may already be gone).
func sendReject(w io.Writer, code byte, epoch uint64, reason string) {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	b := make([]byte, 9+len(reason))
	b[0] = code
	binary.LittleEndian.PutUint64(b[1:], epoch)
	copy(b[9:], reason)
	_ = writeMsg(w, msgReject, b)
}

// rejectedError is a peer's reject message.
type rejectedError struct {
	code      byte
	peerEpoch uint64
	reason    string
}

func (e *rejectedError) Error() string { return "peer refused: " + e.reason }

func (e *rejectedError) Unwrap() error {
	switch e.code {
	case rejectEpoch:
		return ErrEpochMismatch
	case rejectAuth:
		return ErrAuth
	}
	return ErrHandshake
}

func parseReject(body []byte) error {
	if len(body) < 9 {
		return fmt.Errorf("%w: short reject message", ErrHandshake)
	}
	reason := strings.Map(func(r rune) rune { // the peer is not trusted yet: printable only
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, string(body[9:]))
	return &rejectedError{code: body[0], peerEpoch: binary.LittleEndian.Uint64(body[1:]), reason: reason}
}

func newNonce() (n [nonceLen]byte, err error) {
	_, err = rand.Read(n[:])
	return n, err
}

// dialHandshake authenticates conn, just dialled to rank peer (this rank's
// right neighbour). The caller sets the deadline.
func dialHandshake(conn net.Conn, l *hsLocal, peer int) error {
	nonceD, err := newNonce()
	if err != nil {
		return err
	}
	hi := hello{epoch: l.epoch, size: uint32(l.size), seg: uint32(l.seg), from: uint32(l.rank), to: uint32(peer), nonce: nonceD}
	b := make([]byte, len(protoMagic)+3+helloLen)
	copy(b, protoMagic)
	b[len(protoMagic)] = msgHello
	binary.LittleEndian.PutUint16(b[len(protoMagic)+1:], helloLen)
	hi.put(b[len(protoMagic)+3:])
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}

	typ, body, err := readMsg(conn)
	switch {
	case err != nil:
		return fmt.Errorf("read challenge: %w", err)
	case typ == msgReject:
		return parseReject(body)
	case typ != msgChallenge || len(body) != challengeLen:
		return fmt.Errorf("%w: expected a challenge, got message type %d (%d bytes)", ErrHandshake, typ, len(body))
	}
	ch := parseHello(body)
	switch {
	case ch.epoch != l.epoch:
		// A checks the epoch before it challenges, so only a broken or
		// hostile peer gets here; say what it claimed anyway.
		return &rejectedError{code: rejectEpoch, peerEpoch: ch.epoch,
			reason: fmt.Sprintf("peer claims epoch %d, this rank is at epoch %d", ch.epoch, l.epoch)}
	case int(ch.size) != l.size || int(ch.seg) != l.seg || int(ch.from) != peer || int(ch.to) != l.rank:
		sendReject(conn, rejectTopology, l.epoch, "challenge names the wrong ring")
		return fmt.Errorf("%w: challenge says rank %d of %d (segment %d floats) to rank %d; want rank %d of %d (segment %d floats) to rank %d",
			ErrHandshake, ch.from, ch.size, ch.seg, ch.to, peer, l.size, l.seg, l.rank)
	}
	macA := body[helloLen:]
	if !hmac.Equal(macA, l.mac(labelAccept, l.rank, peer, &nonceD, &ch.nonce)) {
		sendReject(conn, rejectAuth, l.epoch, fmt.Sprintf("rank %d could not verify your proof of the job secret", l.rank))
		return fmt.Errorf("%w: rank %d did not prove knowledge of the job secret (do the secrets differ?)", ErrAuth, peer)
	}
	if err := writeMsg(conn, msgProof, l.mac(labelDial, l.rank, peer, &nonceD, &ch.nonce)); err != nil {
		return fmt.Errorf("send proof: %w", err)
	}
	typ, body, err = readMsg(conn)
	switch {
	case err != nil:
		return fmt.Errorf("read verdict: %w", err)
	case typ == msgReject:
		return parseReject(body)
	case typ != msgAccept:
		return fmt.Errorf("%w: expected accept, got message type %d", ErrHandshake, typ)
	}
	return nil
}

// acceptHandshake authenticates conn, accepted by this rank, and checks that
// it comes from this rank's left neighbour. The caller sets the deadline.
func acceptHandshake(conn net.Conn, l *hsLocal) error {
	var magic [len(protoMagic)]byte
	if _, err := io.ReadFull(conn, magic[:]); err != nil {
		return fmt.Errorf("read protocol magic: %w", err)
	}
	if string(magic[:]) != protoMagic {
		return fmt.Errorf("%w: not a peertune ring peer (bad protocol magic %q)", ErrHandshake, magic[:])
	}
	typ, body, err := readMsg(conn)
	switch {
	case err != nil:
		return fmt.Errorf("read hello: %w", err)
	case typ != msgHello || len(body) != helloLen:
		sendReject(conn, rejectProtocol, l.epoch, "expected hello")
		return fmt.Errorf("%w: expected hello, got message type %d (%d bytes)", ErrHandshake, typ, len(body))
	}
	hi := parseHello(body)
	left := Left(l.rank, l.size)
	if hi.epoch != l.epoch {
		reason := fmt.Sprintf("epoch mismatch: rank %d is at epoch %d, you (rank %d) are at epoch %d", l.rank, l.epoch, hi.from, hi.epoch)
		sendReject(conn, rejectEpoch, l.epoch, reason)
		return fmt.Errorf("%w: peer claiming rank %d is at epoch %d, this ring is at epoch %d", ErrEpochMismatch, hi.from, hi.epoch, l.epoch)
	}
	if int(hi.size) != l.size || int(hi.to) != l.rank || int(hi.from) != left {
		reason := fmt.Sprintf("rank %d of %d accepts only rank %d; you are rank %d of %d dialling rank %d", l.rank, l.size, left, hi.from, hi.size, hi.to)
		sendReject(conn, rejectTopology, l.epoch, reason)
		return fmt.Errorf("%w: %s", ErrHandshake, reason)
	}
	if int(hi.seg) != l.seg {
		reason := fmt.Sprintf("segment size mismatch: rank %d uses %d-float segments, you (rank %d) use %d (set the same SegmentBytes on every rank)", l.rank, l.seg, hi.from, hi.seg)
		sendReject(conn, rejectTopology, l.epoch, reason)
		return fmt.Errorf("%w: %s", ErrHandshake, reason)
	}
	nonceA, err := newNonce()
	if err != nil {
		return err
	}
	ch := hello{epoch: l.epoch, size: uint32(l.size), seg: uint32(l.seg), from: uint32(l.rank), to: uint32(left), nonce: nonceA}
	cb := make([]byte, challengeLen)
	ch.put(cb)
	copy(cb[helloLen:], l.mac(labelAccept, left, l.rank, &hi.nonce, &nonceA))
	if err := writeMsg(conn, msgChallenge, cb); err != nil {
		return fmt.Errorf("send challenge: %w", err)
	}
	typ, body, err = readMsg(conn)
	switch {
	case err != nil:
		return fmt.Errorf("read proof: %w", err)
	case typ == msgReject:
		return fmt.Errorf("peer claiming rank %d refused this rank (do the secrets or epochs differ?): %w", left, parseReject(body))
	case typ != msgProof || len(body) != macLen:
		return fmt.Errorf("%w: expected proof, got message type %d (%d bytes)", ErrHandshake, typ, len(body))
	}
	if !hmac.Equal(body, l.mac(labelDial, left, l.rank, &hi.nonce, &nonceA)) {
		sendReject(conn, rejectAuth, l.epoch, fmt.Sprintf("rank %d could not verify your proof of the job secret", l.rank))
		return fmt.Errorf("%w: peer claiming rank %d did not prove knowledge of the job secret (do the secrets differ?)", ErrAuth, left)
	}
	if err := writeMsg(conn, msgAccept, nil); err != nil {
		return fmt.Errorf("send accept: %w", err)
	}
	return nil
}
