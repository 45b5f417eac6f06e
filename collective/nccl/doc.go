// Package nccl is a collective.Communicator over NVIDIA NCCL, for GPU
// buffers. It is what GPU nodes use; CPU nodes use collective/ring. The
// trainer does not know which it has.
//
// peertune builds with plain `go build` and no CUDA toolkit: libnccl.so.2
// and the CUDA driver (libcuda.so.1) are opened at run time with dlopen
// (internal/dl), and the few functions, types and constants used are
// declared here, from the public headers (consts.go, abi.go), and called
// through small C trampolines.
//
// Usage. Rank 0 makes the communicator's unique id and the rendezvous hands
// it to every rank; the id travels in msgpack like the rest of the
// rendezvous protocol (cmd puts it in the leader's Commit through
// node.RendezvousOptions.CommitToken; the leader is the world's rank 0):
//
//	// rank 0:
//	id, err := nccl.NewUniqueID()      // needs libnccl, not a GPU
//	blob, err := nccl.MarshalID(id)    // put blob in the rendezvous message
//	// every rank, once the rendezvous has delivered blob:
//	id, err := nccl.UnmarshalID(blob)
//	cfg := nccl.DefaultConfig()
//	cfg.Rank, cfg.Size, cfg.Epoch, cfg.ID = w.Rank, w.Size, w.Epoch, id
//	cfg.Device, cfg.Stream = dev, stream // the CUDA backend's device and stream
//	comm, err := nccl.New(ctx, cfg, log)
//	if err != nil { ... }  // errors.Is(err, nccl.ErrLibraryNotFound / nccl.ErrNoGPU): use the ring
//	defer comm.Close()
//	err = comm.AllReduce(ctx, grads, collective.Avg) // grads: an nccl.DeviceBuffer
//
// When a world loses ranks (and gains none) and the library has
// ncclCommShrink (NCCL >= 2.27), the survivors may call
// comm.Shrink(ctx, deadRanks) instead of building a new communicator (every
// survivor must: ask Shrinkable before agreeing to it); on a
// membership change that does call for a new one, Close the old one (which
// aborts what is in flight) and New with a new id. See Comm for the failure
// and threading rules, which are those of package collective.
//
// # Finding the library
//
// Default loads NCCL once per process, from the first of:
//
//  1. $PEERTUNE_NCCL_LIB (a file, or a folder holding libnccl.so.2);
//  2. the folders of $LD_LIBRARY_PATH;
//  3. the dynamic linker's own search (ld.so.cache, /lib, /usr/lib), then
//     /usr/lib/<multiarch>, /usr/lib64, /usr/lib, /usr/local/lib and
//     /usr/local/cuda/lib64;
//  4. nvidia/nccl/lib in Python site-packages, where pip's nvidia-nccl-cu12
//     and nvidia-nccl-cu13 put it: $PEERTUNE_PYTHON_SITE (colon-separated
//     site-packages folders), $VIRTUAL_ENV, $CONDA_PREFIX, the user site
//     ($PYTHONUSERBASE or ~/.local), every pyenv version
//     (${PYENV_ROOT:-~/.pyenv}/versions/*), /usr/local/lib/python3*,
//     /usr/lib/python3*, /usr/lib/python3/dist-packages and /opt/conda.
//     Python is never run: the folders are derived from the environment
//     and globbed.
//
// A candidate is refused if it does not load, is older than NCCL 2.14 (the
// first with non-blocking communicators), or lacks an entry point; the
// search then goes on. When nothing fits, the error wraps
// ErrLibraryNotFound, lists every place looked and every file refused (with
// dlerror's reason), and says how to install NCCL. The CUDA driver is
// looked for only when a communicator is made, in the dynamic linker's
// search and the standard folders plus /usr/local/nvidia/lib64 (container
// runtimes) and /usr/lib/wsl/lib; without it the error wraps ErrNoGPU.
//
// # Non-blocking communicators
//
// Communicators are created with ncclConfig_t.blocking = 0, so no NCCL
// call blocks: a call may return ncclInProgress, and the Comm then polls
// ncclCommGetAsyncError (and, for collectives, cuStreamQuery on the
// stream) until success, an error, ctx's end or a deadline, calling no
// other NCCL function meanwhile, as NCCL requires. That is what makes every
// operation abortable: a cancelled ctx, OpTimeout or Close calls
// ncclCommAbort, which also stops the kernels in flight, and the operation
// returns an error wrapping collective.ErrAborted (with the context's
// error) or collective.ErrClosed; an asynchronous error meaning the world
// broke wraps collective.ErrPeerLost. Errors carry ncclGetErrorString and
// ncclGetLastError's text (type Error), or the CUDA driver's
// cuGetErrorName/cuGetErrorString (type CUDAError).
//
// # Threading and CUDA contexts
//
// Each NCCL or CUDA call binds the Comm's CUDA context (cuCtxSetCurrent)
// and restores the thread's previous one inside the same C call, and a
// Comm's calls are serialised by its mutex. A goroutine can change OS
// threads between two cgo calls but never during one, so no
// runtime.LockOSThread is needed and Close or Shrink may run on any
// goroutine. By default the context is Device's primary context, which is
// also what the CUDA runtime inside NCCL uses; a backend that made its own
// context passes it in Config.Context, and its stream must belong to it.
// ncclGroupStart/End are not used: group state is per OS thread in NCCL,
// and one collective per call needs no group.
package nccl
