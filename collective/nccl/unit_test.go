package nccl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/kernels"
)

var errPeerLostForTest = collective.ErrPeerLost

func TestVersionCode(t *testing.T) {
	for _, c := range []struct {
		code int
		v    Version
	}{
		{2804, Version{2, 8, 4}},   // old encoding: X*1000+Y*100+Z
		{20903, Version{2, 9, 3}},  // new encoding from 2.9
		{21400, Version{2, 14, 0}}, // minVersion
		{21700, Version{2, 17, 0}},
		{22703, Version{2, 27, 3}},
		{23007, Version{2, 30, 7}}, // NCCL_VERSION_CODE of the 2.30.7 header
	} {
		if got := versionFromCode(c.code); got != c.v {
			t.Errorf("versionFromCode(%d) = %v, want %v", c.code, got, c.v)
		}
		if got := c.v.Code(); got != c.code {
			t.Errorf("%v.Code() = %d, want %d", c.v, got, c.code)
		}
	}
	if !(Version{2, 27, 0}).AtLeast(shrinkVersion) || (Version{2, 26, 9}).AtLeast(shrinkVersion) ||
		!(Version{3, 0, 0}).AtLeast(shrinkVersion) || (Version{2, 13, 99}).AtLeast(minVersion) {
		t.Error("AtLeast")
	}
}

func TestResultNamesAndClasses(t *testing.T) {
	names := map[Result]string{
		Success: "ncclSuccess", UnhandledCudaError: "ncclUnhandledCudaError", SystemError: "ncclSystemError",
		InternalError: "ncclInternalError", InvalidArgument: "ncclInvalidArgument", InvalidUsage: "ncclInvalidUsage",
		RemoteError: "ncclRemoteError", InProgress: "ncclInProgress", Timeout: "ncclTimeout", 42: "ncclResult_t(42)",
	}
	for r, want := range names {
		if r.String() != want {
			t.Errorf("%d: %q, want %q", int(r), r.String(), want)
		}
	}
	for _, r := range []Result{SystemError, InternalError, RemoteError, Timeout} {
		if !r.peerLost() {
			t.Errorf("%v should mean the world broke", r)
		}
	}
	for _, r := range []Result{Success, UnhandledCudaError, InvalidArgument, InvalidUsage, InProgress} {
		if r.peerLost() {
			t.Errorf("%v is local, not a lost peer", r)
		}
	}
}

func TestCUDAErrorIsNoGPU(t *testing.T) {
	if !errors.Is(&CUDAError{"cuInit", cudaErrNoDevice, "CUDA_ERROR_NO_DEVICE"}, ErrNoGPU) {
		t.Error("CUDA_ERROR_NO_DEVICE should match ErrNoGPU")
	}
	if !errors.Is(&CUDAError{"cuInit", cudaErrStubLibrary, "CUDA_ERROR_STUB_LIBRARY"}, ErrNoGPU) {
		t.Error("CUDA_ERROR_STUB_LIBRARY should match ErrNoGPU")
	}
	if errors.Is(&CUDAError{"cuStreamQuery", 700, "CUDA_ERROR_ILLEGAL_ADDRESS"}, ErrNoGPU) {
		t.Error("a device fault is not 'no GPU'")
	}
}

// TestConfigMirrorsInitializer checks the ncclConfig_t we hand NCCL against
// NCCL_CONFIG_INITIALIZER: size, magic, version of the header matching the
// library, blocking = 0, every other field NCCL_CONFIG_UNDEF_*.
func TestConfigMirrorsInitializer(t *testing.T) {
	if configSize != 40 {
		t.Fatalf("sizeof(ncclConfig_v21700) = %d, want 40", configSize)
	}
	for _, c := range []struct {
		lib         Version
		size        uintptr
		hdrVersion  uint32
		description string
	}{
		{Version{2, 30, 7}, 40, 21700, "newer library: our 2.17 layout, NCCL defaults the rest"},
		{Version{2, 17, 1}, 40, 21700, "2.17"},
		{Version{2, 15, 5}, 24, 21505, "2.14-2.16: ncclConfig_v21400 ends after blocking"},
	} {
		cfg := newConfig(c.lib)
		size, magic, version, blocking, cga, minC, maxC, netNil := configFields(cfg)
		freeConfig(cfg)
		if size != c.size || magic != 0xcafebeef || version != c.hdrVersion || blocking != 0 ||
			cga != ncclConfigUndefInt || minC != ncclConfigUndefInt || maxC != ncclConfigUndefInt || !netNil {
			t.Errorf("%s (%v): size %d magic %#x version %d blocking %d cga %d min %d max %d netName nil %v",
				c.description, c.lib, size, magic, version, blocking, cga, minC, maxC, netNil)
		}
	}
	if ncclConfigUndefInt != -2147483648 {
		t.Fatal("NCCL_CONFIG_UNDEF_INT is INT_MIN")
	}
}

func TestConfigCheck(t *testing.T) {
	good := DefaultConfig()
	good.Size, good.Rank, good.ID[0] = 2, 1, 1
	if err := good.check(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"Size":      func(c *Config) { c.Size = 0 },
		"Rank":      func(c *Config) { c.Rank = 2 },
		"Device":    func(c *Config) { c.Device = -1 },
		"all zero":  func(c *Config) { c.ID = [IDBytes]byte{} },
		"Timeout":   func(c *Config) { c.InitTimeout = 0 },
		"OpTimeout": func(c *Config) { c.OpTimeout = -1 },
	} {
		c := good
		mod(&c)
		if err := c.check(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
		if _, err := New(context.Background(), c, nil); err == nil {
			t.Errorf("%s: New accepted a bad config", name)
		}
	}
}

func TestIDEncoding(t *testing.T) {
	var id [IDBytes]byte
	for i := range id {
		id[i] = byte(i * 7)
	}
	b, err := MarshalID(id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0xc4, IDBytes}) || len(b) != 2+IDBytes {
		t.Fatalf("encoding % x...: want msgpack bin8 of %d bytes", b[:4], IDBytes)
	}
	got, err := UnmarshalID(b)
	if err != nil || got != id {
		t.Fatalf("round trip: %v", err)
	}
	short, _ := MarshalID(id)
	short[1] = 100 // claims 100 bytes
	for name, bad := range map[string][]byte{
		"short":    short[:102],
		"trailing": append(append([]byte{}, b...), 0x00),
		"string":   append([]byte{0xd9, IDBytes}, id[:]...),
		"garbage":  {0xc1},
		"empty":    nil,
	} {
		if _, err := UnmarshalID(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestShrunkRank(t *testing.T) {
	for _, c := range []struct {
		rank    int
		exclude []int
		want    int
	}{
		{0, []int{1}, 0}, {2, []int{1}, 1}, {3, []int{0, 1}, 1}, {1, []int{1}, -1}, {4, []int{5, 6}, 4}, {5, []int{0, 2, 4}, 2}, {3, []int{0, 0, 2, 2}, 1},
	} {
		if got := ShrunkRank(c.rank, c.exclude); got != c.want {
			t.Errorf("ShrunkRank(%d, %v) = %d, want %d", c.rank, c.exclude, got, c.want)
		}
	}
}

// Shrinkable needs both a library with ncclCommShrink and a communicator
// that is still held.
func TestShrinkable(t *testing.T) {
	var sym byte
	withShrink := &Library{version: Version{2, 27, 3}, fns: ncclFns{commShrink: unsafe.Pointer(&sym)}}
	old := &Library{version: Version{2, 26, 2}}
	for _, c := range []struct {
		name     string
		lib      *Library
		handle   uintptr
		released bool
		want     bool
	}{
		{"held, 2.27", withShrink, 0x1000, false, true},
		{"held, 2.26", old, 0x1000, false, false},
		{"released", withShrink, 0, true, false},
		{"never made", withShrink, 0, false, false},
	} {
		cm := &Comm{lib: c.lib, handle: c.handle, released: c.released}
		if got := cm.Shrinkable(); got != c.want {
			t.Errorf("%s: Shrinkable() = %v, want %v", c.name, got, c.want)
		}
	}
}

type hostBuf []float32

func (h hostBuf) Len() int                        { return len(h) }
func (h hostBuf) DType() kernels.DType            { return kernels.F32 }
func (h hostBuf) Slice(off, n int) kernels.Buffer { return h[off : off+n] }
func (h hostBuf) Host() []float32                 { return h }

type devBuf struct {
	ptr uintptr
	n   int
	dt  kernels.DType
}

func (d devBuf) Len() int             { return d.n }
func (d devBuf) DType() kernels.DType { return d.dt }
func (d devBuf) Slice(off, n int) kernels.Buffer {
	return devBuf{d.ptr + uintptr(off)*4, n, d.dt}
}
func (d devBuf) DevicePtr() uintptr { return d.ptr }

func TestDeviceData(t *testing.T) {
	for name, buf := range map[string]kernels.Buffer{
		"nil":       nil,
		"host":      hostBuf{1, 2},
		"null ptr":  devBuf{0, 4, kernels.F32},
		"bad dtype": devBuf{0x1000, 4, kernels.DType(9)},
	} {
		if _, _, _, err := deviceData(buf); !errors.Is(err, collective.ErrUnsupportedBuffer) {
			t.Errorf("%s: %v", name, err)
		}
	}
	ptr, n, dt, err := deviceData(devBuf{0x1000, 4, kernels.F32}.Slice(1, 2))
	if err != nil || ptr != 0x1004 || n != 2 || dt != ncclFloat32 {
		t.Errorf("f32 slice: %#x %d %d %v", ptr, n, dt, err)
	}
	if _, _, dt, err := deviceData(devBuf{0x1000, 4, kernels.BF16}); err != nil || dt != ncclBfloat16 {
		t.Errorf("bf16: %d %v", dt, err)
	}
	if _, _, _, err := deviceData(devBuf{0, 0, kernels.F32}); err != nil {
		t.Errorf("empty buffer: %v", err)
	}
}

// PeerLost (the membership layer saw a member go) fails the Comm with
// ErrPeerLost and the reason; with ncclCommShrink the NCCL communicator is
// kept for Shrink, without it the Comm lets it go.
func TestPeerLost(t *testing.T) {
	var sym byte
	withShrink := &Library{version: Version{2, 27, 3}, fns: ncclFns{commShrink: unsafe.Pointer(&sym)}}
	old := &Library{version: Version{2, 26, 2}}
	newComm := func(lib *Library, h uintptr) *Comm {
		return &Comm{lib: lib, handle: h, rank: 1, cudev: -1, log: zap.NewNop(), dead: make(chan struct{}), torn: make(chan struct{})}
	}
	reason := errors.New("node n2 failed or left (membership)")

	c := newComm(withShrink, 0x1000)
	c.PeerLost(reason)
	err := c.failure()
	if !errors.Is(err, collective.ErrPeerLost) || !errors.Is(err, reason) {
		t.Errorf("after PeerLost: failure %v, want ErrPeerLost wrapping the reason", err)
	}
	select {
	case <-c.dead: // a collective waiting in wait() returns now
	default:
		t.Error("PeerLost did not wake operations in flight")
	}
	if !c.Shrinkable() {
		t.Error("with ncclCommShrink the communicator must be kept for Shrink")
	}
	c.PeerLost(errors.New("again")) // no double close, first reason kept
	if !errors.Is(c.failure(), reason) {
		t.Error("a second PeerLost replaced the first failure")
	}

	c = newComm(old, 0)
	c.PeerLost(reason)
	<-c.torn // released (nothing to abort with a zero handle)
	if c.Shrinkable() || !c.released {
		t.Error("without ncclCommShrink the communicator is released")
	}
	if !errors.Is(c.failure(), collective.ErrPeerLost) {
		t.Errorf("failure %v", c.failure())
	}
}
