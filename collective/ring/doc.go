// Package ring is a collective.Communicator over TCP in pure Go: a ring
// all-reduce (reduce-scatter then all-gather) and a pipelined broadcast, on
// float32 host buffers. It is what CPU nodes use; GPU nodes use NCCL.
//
// Usage, on every rank (ranks may start in any order, seconds apart):
//
//	cfg := ring.DefaultConfig()
//	cfg.Rank, cfg.Size, cfg.Epoch = w.Rank, w.Size, w.Epoch
//	cfg.Peers = addrs   // rank i listens on addrs[i]; ring order = rank order
//	cfg.Secret = secret // the job secret, the same on every rank
//	comm, err := ring.New(ctx, cfg, log)
//	if err != nil { ... }   // errors.Is(err, ring.ErrAuth / ring.ErrEpochMismatch) say why
//	defer comm.Close()
//	err = comm.AllReduce(ctx, grads, collective.Avg) // grads: a kernels.HostBuffer
//
// NewLoopback forms a whole ring inside one process (tests, benchmarks);
// BenchAllReduce and LoopbackThroughput are what `peertune bench allreduce`
// reports.
//
// # Design
//
// The schedule (schedule.go) is a pure function — which chunk each rank
// sends and receives at each step — tested exhaustively without sockets. A
// buffer of n elements is split into Size near-equal chunks; in Size-1
// reduce-scatter steps each rank sends one chunk to its right neighbour and
// adds the chunk arriving from its left one, so rank r ends with the full
// sum of chunk r; in Size-1 all-gather steps those sums travel around the
// ring. Each rank sends 2(Size-1)/Size of the buffer, the minimum for an
// all-reduce. Each chunk is summed exactly once, in a fixed order, and the
// all-gather copies that one result everywhere, so every rank ends with
// bit-identical buffers.
//
// Chunks move in segments (Config.SegmentBytes). The chunk a rank receives
// at one step is the one it sends at the next, so each received segment is
// queued for sending as soon as it is reduced, and a dedicated writer
// goroutine per Comm sends while the caller's goroutine receives. Receiving
// never waits for sending, so a ring of blocking sockets cannot deadlock
// however large the buffer. On little-endian hosts the buffer's own memory
// is the wire format: sends and all-gather receives copy nothing in user
// space. Every frame carries a header (operation number, step, chunk,
// offset, length, total length, op) that the receiver checks against what
// the schedule says must come next, so ranks that disagree fail with
// ErrDesync instead of silently mis-summing.
//
// # Security
//
// Every connection starts with a mutual HMAC-SHA256 challenge-response over
// the job secret, the epoch, the ring size, the segment size, both ranks and
// both sides' fresh nonces (handshake.go). A client without the secret
// cannot complete it; a rank from another epoch is refused with an error
// that says so; strangers sending garbage or nothing are dropped (after at
// most HandshakeTimeout) while the listener keeps accepting, and never delay
// the real neighbour. After the handshake the stream is neither encrypted
// nor integrity-protected per frame: an attacker able to inject into or
// hijack an established TCP connection on the path is outside this threat
// model (run the job on a trusted network, or under WireGuard/IPsec).
//
// # Failure
//
// Cancelling a collective's ctx, its deadline (or Config.OpTimeout), a
// desync, Close, or any I/O error fails the Comm: the first cause is kept,
// both connections are closed — unblocking every read and write at once —
// and the neighbours, seeing EOF, fail and close theirs, so the failure goes
// around the ring in milliseconds. The cancelled rank returns an error
// wrapping collective.ErrAborted and the context error; the others return
// collective.ErrPeerLost. A process that dies (SIGKILL) closes its sockets
// the same way; a host that vanishes is found by TCP keepalive
// (Config.KeepAlive). A failed Comm stays failed; a new world makes a new
// one. No goroutine outlives Close, and none touches the caller's buffer
// after a collective returns.
package ring
