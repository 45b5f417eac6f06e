package cuda

import (
	"errors"
	"fmt"
	"strings"
	"sync"
)

// libs are the three CUDA libraries, loaded once per process: a library
// mapped into a process is process-wide state anyway, and cuInit is once
// per process.
type libs struct {
	drv   *driverAPI
	nv    *nvrtcAPI
	blas  *cublasAPI
	comp  *compiler
	sigs  map[string]kernelSig // every kernel of the embedded sources
	nDev  int
	noDev error // non-nil when the driver works but sees no GPU
}

// errNoCUDA marks errors that mean "CUDA is not usable on this machine"
// (a library or the GPU is missing), as opposed to a failure of a GPU that
// is there. Probe and --device auto fall back to the CPU on these only.
var errNoCUDA = errors.New("CUDA not available")

// notAvailable wraps err so that errors.Is(err, errNoCUDA) holds.
type notAvailable struct{ err error }

func (e *notAvailable) Error() string           { return e.err.Error() }
func (e *notAvailable) Unwrap() []error         { return []error{e.err, errNoCUDA} }
func unavailable(format string, a ...any) error { return &notAvailable{fmt.Errorf(format, a...)} }

// IsNotAvailable reports whether err (from New) means that CUDA is not
// usable here at all (no driver, no GPU, no NVRTC or cuBLAS), rather than
// that a present GPU failed.
func IsNotAvailable(err error) bool { return errors.Is(err, errNoCUDA) }

var process struct {
	once sync.Once
	libs *libs
	err  error
}

// loadLibs loads the driver, NVRTC and cuBLAS once per process.
func loadLibs() (*libs, error) {
	process.once.Do(func() { process.libs, process.err = loadLibsUncached() })
	return process.libs, process.err
}

func loadLibsUncached() (*libs, error) {
	l := &libs{}
	var err error
	if l.sigs, err = allKernels(); err != nil {
		return nil, err // a build defect: the embedded sources do not parse
	}
	dlib, err := driverSpec().open()
	if err != nil {
		return nil, unavailable("cuda: %w", err)
	}
	if l.drv, err = loadDriver(dlib); err != nil {
		return nil, unavailable("cuda: %w", err)
	}
	if err := l.drv.init(); err != nil {
		var ce *cuError
		if errors.As(err, &ce) && ce.code == cudaErrorNoDevice {
			l.noDev = unavailable("cuda: no CUDA GPU visible (%s loaded; %v)", dlib.Name(), err)
		} else {
			return nil, unavailable("cuda: %s loaded but the driver does not initialise: %w", dlib.Name(), err)
		}
	} else {
		if l.nDev, err = l.drv.deviceCount(); err != nil {
			return nil, unavailable("cuda: %w", err)
		}
		if l.nDev == 0 {
			l.noDev = unavailable("cuda: no CUDA GPU visible (%s loaded, cuDeviceGetCount = 0; check CUDA_VISIBLE_DEVICES)", dlib.Name())
		}
	}
	nlib, err := nvrtcSpec(l.drv.version).open()
	if err != nil {
		return nil, unavailable("cuda: %w", err)
	}
	if l.nv, err = loadNVRTC(nlib); err != nil {
		return nil, unavailable("cuda: %w", err)
	}
	if why := newerThanDriver("NVRTC "+nlib.Name()+" "+l.nv.versionString(), l.nv.major, l.drv.version); why != "" {
		return nil, unavailable("cuda: %s; %s", why, hintNVRTC)
	}
	blib, err := cublasSpec(l.drv.version).open()
	if err != nil {
		return nil, unavailable("cuda: %w", err)
	}
	if why := newerThanDriver("cuBLAS "+blib.Name(), sonameMajor(blib.Name()), l.drv.version); why != "" {
		return nil, unavailable("cuda: %s; %s", why, hintCublas)
	}
	if l.blas, err = loadCublas(blib); err != nil {
		return nil, unavailable("cuda: %w", err)
	}
	l.comp = newCompiler(l.nv, defaultCacheDir())
	return l, nil
}

// DeviceInfo describes one GPU.
type DeviceInfo struct {
	Ordinal           int
	Name              string
	ComputeCapability string // "9.0"
	SMs               int
	TotalMemory       uint64 // bytes
}

func (d *deviceInfo) public() DeviceInfo {
	return DeviceInfo{Ordinal: d.ordinal, Name: d.name, ComputeCapability: fmt.Sprintf("%d.%d", d.major, d.minor),
		SMs: d.sms, TotalMemory: d.totalMem}
}

// ProbeResult says whether the CUDA backend can run here, and why not.
type ProbeResult struct {
	// Usable is true when the driver, a GPU, NVRTC and cuBLAS are all there.
	Usable bool
	// Reason is one line: what will be used, or what is missing, where it
	// was looked for, and how to install it.
	Reason string
	// Library files (or sonames) that loaded; "" when not loaded.
	Driver, NVRTC, Cublas string
	// DriverVersion is the CUDA version the driver supports, e.g. "13.2";
	// NVRTCVersion and CublasVersion likewise ("" when not loaded).
	DriverVersion, NVRTCVersion string
	Devices                     []DeviceInfo
}

func (p ProbeResult) String() string { return p.Reason }

// Probe loads the CUDA libraries (once per process) and reports whether a
// Backend can be created, without creating one. --device auto uses it to
// choose and to log why.
func Probe() ProbeResult {
	l, err := loadLibs()
	var res ProbeResult
	if l == nil {
		res.Reason = err.Error()
		return res
	}
	res.Driver, res.DriverVersion = l.drv.lib.Name(), driverVersionString(l.drv.version)
	res.NVRTC, res.NVRTCVersion = l.nv.lib.Name(), l.nv.versionString()
	res.Cublas = l.blas.lib.Name()
	if l.noDev != nil {
		res.Reason = l.noDev.Error()
		return res
	}
	for i := 0; i < l.nDev; i++ {
		d, err := l.drv.device(i)
		if err != nil {
			res.Reason = fmt.Sprintf("cuda: device %d: %v", i, err)
			return res
		}
		res.Devices = append(res.Devices, d.public())
	}
	names := make([]string, len(res.Devices))
	for i, d := range res.Devices {
		names[i] = fmt.Sprintf("%d: %s (sm_%s, %.0f GiB)", d.Ordinal, d.Name,
			strings.ReplaceAll(d.ComputeCapability, ".", ""), float64(d.TotalMemory)/(1<<30))
	}
	res.Usable = true
	res.Reason = fmt.Sprintf("cuda: %d GPU(s) [%s]; driver %s (CUDA %s), NVRTC %s (%s), cuBLAS %s",
		len(res.Devices), strings.Join(names, "; "), res.Driver, res.DriverVersion, res.NVRTCVersion, res.NVRTC, res.Cublas)
	return res
}
