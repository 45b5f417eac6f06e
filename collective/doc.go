// Package collective defines the Communicator: the collective operations
// (all-reduce, broadcast) that data-parallel training needs, over one flat
// buffer, among the ranks of one world.
//
// A Communicator knows no membership and no model. Something else (package
// node plus a little glue in cmd) decides who is in the world, gives every
// rank its Rank, Size and epoch, and builds a Communicator for that world:
// collective/ring (TCP, pure Go, host buffers) or collective/nccl (GPUs).
// Single is the world of one.
//
// The training loop uses it like this:
//
//	comm, err := ring.New(ctx, cfg, log) // or &collective.Single{} for one node
//	if err != nil { ... }
//	defer comm.Close()
//	for step := start; step < steps; step++ {
//		forwardBackward(grads)                     // this rank's share of the step
//		err := comm.AllReduce(ctx, grads, collective.Avg)
//		switch {
//		case errors.Is(err, collective.ErrPeerLost):
//			comm.Close()     // unusable now: form a new world (new epoch),
//			comm = rejoin()  // rebuild the Communicator, redo this step
//			step--
//			continue
//		case err != nil:
//			return err       // cancelled, deadline, bug
//		}
//		optimizerStep(params, grads)               // identical on every rank
//	}
//
// Rules every implementation follows:
//
//   - Collectives are in place, on one flat buffer. Every rank calls the same
//     collectives in the same order with buffers of the same length (and the
//     same op / root); implementations detect a mismatch where they can.
//   - A Communicator is not safe for concurrent use: one collective at a time.
//     Close is the exception: it may be called from any goroutine, at any time,
//     to abort an operation in flight.
//   - Cancelling the ctx of an operation, or its deadline passing, aborts it
//     on this rank with an error wrapping ErrAborted and the context's error;
//     the other ranks see the world break and fail with ErrPeerLost.
//   - After an operation fails, the Communicator is unusable: every later call
//     returns an error wrapping the first failure. A new world makes a new
//     Communicator. Close is idempotent and never blocks forever.
//   - Success on one rank does not prove success on all: a rank that has
//     received everything it needs returns nil even if a peer dies a moment
//     later. Recovery (package trainer) must therefore agree on the step to
//     resume from when it forms the new world, not infer it from errors.
package collective
