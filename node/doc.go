// Package node says who is in the job: gossip membership on
// hashicorp/memberlist, the metadata each node advertises (msgpack, under
// memberlist's 512-byte limit), and rendezvous, which turns a membership view
// into a World{Epoch, Rank, Size, Peers} for the collective. It knows no
// tensors and imports nothing of peertune's.
//
// The usage loop:
//
//	secret, err := node.ReadSecret(secretFile, os.Getenv) // --secret-file or PEERTUNE_SECRET
//	cfg := node.DefaultConfig()
//	cfg.BindAddr, cfg.AdvertiseAddr = "0.0.0.0", "10.0.0.5" // never guessed
//	cfg.Seeds = []string{"10.0.0.4:7946"}
//	cfg.SecretKey = node.DeriveKey(secret)
//	cfg.JobHash = node.HashJobConfig(canonicalJobConfig)
//	cfg.Endpoint = "10.0.0.5:29500" // where the collective listens
//	n, err := node.Start(ctx, cfg, logger) // joins the seeds, or says why not
//	defer n.Shutdown()
//	var last *node.World
//	for {
//		w, err := node.Rendezvous(ctx, n, last, cfg.RendezvousOptions())
//		if errors.Is(err, node.ErrRefused) { ... } // another job's config: stop
//		n.UpdateMeta(func(m *node.Meta) { m.State = node.StateTraining })
//		comm := collective.New(w.Rank, w.Size, w.Peers) // in cmd, not here
//		train until a peer fails, publishing progress:
//			n.UpdateMeta(func(m *node.Meta) { m.Step, m.StepMillis = s, ms })
//		last = &w
//	}
//	// on SIGTERM, once training has stopped: n.Leave(time.Second), so
//	// peers see it at once and stop counting it, then Shutdown.
//
// # Security
//
// All gossip and rendezvous traffic is AES-GCM encrypted and authenticated
// with the job's key (memberlist's keyring, GossipVerifyIncoming/Outgoing).
// A node with another key or none cannot join: its Join fails with
// ErrGossipKey, and the nodes it tried log a warning naming its address.
//
// # Rendezvous
//
// Propose is the pure core (rendezvous.go, no I/O, tested exhaustively): the
// eligible nodes are the ready ones of the job's config hash; the smallest ID
// leads and has rank 0; a new world needs a strict majority of the last one,
// not counting nodes that left on purpose (no split brain), and takes a new,
// larger epoch. A world's members are processes: each has an ID (its name)
// and an incarnation (Meta.Inc, Peer.Inc), random per process, so a new
// process under an old name is told from the old one. Rendezvous (protocol.go) is the leader-propose, member-ack,
// leader-commit exchange around it, over memberlist's reliable channel.
//
// # Partitions
//
// A new world needs a strict majority of the last one, so under a partition
// at most one side trains; the other waits in Rendezvous, logging "no
// majority of last world (k of n)", unless the operator set AllowMinority.
// memberlist stops talking to nodes it declared dead, so each node keeps
// trying to join the members it lost without a graceful Leave
// (ReconnectInterval); when the network heals the views merge and the
// waiting side joins the majority's next world. Leave tells every member
// directly, so a graceful departure is never retried. An observer
// (Config.Observer, `peertune status`) gossips StateObserver and is never
// counted.
//
// A process that stopped gracefully (Leave) does not count in the
// majority: it promised never to train in the job again (its Rendezvous
// fails with ErrLeft), so the survivors of a stopped node in a world of 2,
// or of two in a world of 4, go on ("k of n; d left on purpose" when they
// cannot). A crashed node still counts: it may only be cut off. Only the
// same process counts for the last world: a new process under a last-world
// name (a restart, a Slurm requeue with the same --node-name) joins the
// next world but does not help it to a majority ("r restarted as a new
// process"), and does not undo its predecessor's departure. So a world of
// 2 whose other node crashed and was restarted waits, where a graceful
// stop before the restart would not; AllowMinority is the way on. Why this
// keeps the guarantee for any number of returned names, what it costs, and
// how worlds committed by older code (no incarnations: matched by name, with
// the older guarantee) are handled, is argued at lastQuorum in
// rendezvous.go.
//
// Known limits: a node stays Ready after Rendezvous returns until the caller
// sets Training, and Ready or Training nodes count as eligible; a proposal to
// a node that is not inside Rendezvous is not answered, so the leader times
// out and proposes again. Bringing training nodes back into rendezvous when
// membership changes is the trainer's job (elastic recovery). A Commit is
// not atomic. A member whose Commit is lost adopts
// the world once the leader's gossiped epoch shows it (from the same leader
// process: its incarnation must match the proposal's), but without the
// Commit's World.Token (RendezvousOptions.CommitToken): users of the token
// agree among the members whether all have it. A member that never learns
// of the commit keeps its older last world until its next rendezvous.
package node
