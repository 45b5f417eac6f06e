package cuda

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/peertune/peertune/internal/atomicfile"
)

// nvrtcOptions are the options every module is compiled with, besides the
// target architecture. No --use_fast_math: expf/logf/sqrtf and division stay
// IEEE-accurate (the kerneltest tolerances assume float32 arithmetic).
var nvrtcOptions = []string{
	"--std=c++17",
	// Line tables only (no -G): compute-sanitizer and profilers can point at
	// source lines, at no cost in speed.
	"--generate-line-info",
	// Register spills and local memory are performance bugs in kernels this
	// small: make ptxas say so in the log, which the NVRTC test requires to
	// be empty.
	"--ptxas-options=--warn-on-spills",
	"--ptxas-options=--warn-on-local-memory-usage",
}

// EnvCacheDir overrides where compiled kernels are cached; "off" disables
// the disk cache.
const EnvCacheDir = "PEERTUNE_CUBIN_CACHE"

// defaultCacheDir is $XDG_CACHE_HOME/peertune/cubin, else
// ~/.cache/peertune/cubin; "" when neither can be found.
func defaultCacheDir() string {
	if v := os.Getenv(EnvCacheDir); v != "" {
		if v == "off" {
			return ""
		}
		return v
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "peertune", "cubin")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "peertune", "cubin")
	}
	return ""
}

// compiler compiles the embedded modules with one NVRTC, through a disk
// cache and an in-process cache. It is safe for concurrent use.
type compiler struct {
	nv       *nvrtcAPI
	cacheDir string // "" = no disk cache

	mu  sync.Mutex
	mem map[string]*moduleImage // by cache key
}

func newCompiler(nv *nvrtcAPI, cacheDir string) *compiler {
	return &compiler{nv: nv, cacheDir: cacheDir, mem: map[string]*moduleImage{}}
}

// moduleImage is a compiled module, ready for cuModuleLoadData.
type moduleImage struct {
	module string
	target string // "sm_90", or "compute_120" for PTX the driver JITs
	image  []byte
	ptx    bool
	log    string // NVRTC warnings ("" when clean)
	cached string // the disk cache file it came from or went to ("" if none)
	hit    bool   // true when read from the disk cache
}

// target picks the NVRTC target for a device of compute capability arch
// (10*major+minor): SASS for it when this NVRTC knows the architecture;
// PTX for the newest architecture it knows when the device is newer (the
// driver compiles PTX for any later GPU); an error when the device is older
// than anything it supports.
func (c *compiler) target(arch int) (string, error) {
	if len(c.nv.archs) == 0 || c.nv.supports(arch) {
		return fmt.Sprintf("sm_%d", arch), nil
	}
	// PTX for the newest architecture NVRTC knows that is not newer than
	// the GPU: the driver compiles PTX for any later compute capability
	// (a GPU newer than NVRTC, or one between the architectures it lists,
	// e.g. sm_110 with an NVRTC 12 that stops at 103 and jumps to 120).
	best := 0
	for _, a := range c.nv.archs {
		if a <= arch {
			best = max(best, a)
		}
	}
	if best > 0 {
		return fmt.Sprintf("compute_%d", best), nil
	}
	return "", fmt.Errorf("NVRTC %s cannot compile for sm_%d (it supports %v; CUDA 13 dropped architectures before sm_75, so use a CUDA 12 NVRTC: %s)",
		c.nv.versionString(), arch, c.nv.archs, hintNVRTC)
}

// cacheKey is sha256 over everything that determines the image: module
// name and source, the shared header, the options (target included) and the
// NVRTC version.
func (c *compiler) cacheKey(module, src string, headers map[string]string, opts []string) string {
	h := sha256.New()
	put := func(s string) {
		fmt.Fprintf(h, "%d:", len(s))
		h.Write([]byte(s))
	}
	put("peertune-cubin-v1")
	put(module)
	put(src)
	for _, name := range []string{commonHeader} {
		put(name)
		put(headers[name])
	}
	put(strings.Join(opts, "\x00"))
	put(c.nv.versionString())
	return hex.EncodeToString(h.Sum(nil))
}

// image returns module compiled for arch.
func (c *compiler) image(module string, arch int) (*moduleImage, error) {
	target, err := c.target(arch)
	if err != nil {
		return nil, err
	}
	return c.imageFor(module, target)
}

// imageFor returns module compiled for target ("sm_XY" or "compute_XY").
func (c *compiler) imageFor(module, target string) (*moduleImage, error) {
	src, err := moduleSource(module)
	if err != nil {
		return nil, err
	}
	headers := moduleHeaders()
	opts := append([]string{"--gpu-architecture=" + target}, nvrtcOptions...)
	key := c.cacheKey(module, src, headers, opts)

	c.mu.Lock()
	defer c.mu.Unlock()
	if img := c.mem[key]; img != nil {
		return img, nil
	}
	ptx := strings.HasPrefix(target, "compute_")
	ext := ".cubin"
	if ptx {
		ext = ".ptx"
	}
	var path string
	if c.cacheDir != "" {
		path = filepath.Join(c.cacheDir, fmt.Sprintf("%s-%s-nvrtc%s-%s%s", module, target, c.nv.versionString(), key[:24], ext))
		if data, err := readCacheFile(path); err == nil {
			img := &moduleImage{module: module, target: target, image: data, ptx: ptx, cached: path, hit: true}
			c.mem[key] = img
			return img, nil
		}
		// Missing, unreadable or corrupt: compile again and overwrite.
	}
	res, err := c.nv.compile(module+".cu", src, headers, target, nvrtcOptions)
	if err != nil {
		return nil, err
	}
	img := &moduleImage{module: module, target: target, image: res.image, ptx: res.ptx, log: res.log}
	if path != "" {
		if err := writeCacheFile(path, res.image); err == nil {
			img.cached = path
		}
		// A cache that cannot be written (read-only home, full disk) only
		// costs the compile next time; it is not an error.
	}
	c.mem[key] = img
	return img, nil
}

// forget drops a module image from both caches, after the driver rejected it.
func (c *compiler) forget(img *moduleImage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.mem {
		if v == img {
			delete(c.mem, k)
		}
	}
	if img.cached != "" {
		os.Remove(img.cached)
	}
}

// The cache file format: a magic line, the hex sha256 of the payload, a
// newline, the payload. A file that does not check out is treated as absent.
const cacheMagic = "peertune-cubin-cache-v1\n"

var errCorruptCache = errors.New("corrupt cache entry")

func readCacheFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(data, []byte(cacheMagic))
	if !ok || len(rest) < 65 || rest[64] != '\n' {
		return nil, fmt.Errorf("%s: %w (bad header)", path, errCorruptCache)
	}
	sum, payload := string(rest[:64]), rest[65:]
	got := sha256.Sum256(payload)
	if hex.EncodeToString(got[:]) != sum || len(payload) == 0 {
		return nil, fmt.Errorf("%s: %w (checksum mismatch)", path, errCorruptCache)
	}
	return payload, nil
}

// writeCacheFile writes atomically: a temporary file in the same directory,
// fsynced, renamed over path. Readers see the old file, the new one, or
// none; never half of one.
func writeCacheFile(path string, payload []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sum := sha256.Sum256(payload)
	var buf bytes.Buffer
	buf.WriteString(cacheMagic)
	buf.WriteString(hex.EncodeToString(sum[:]))
	buf.WriteByte('\n')
	buf.Write(payload)
	return atomicfile.WriteFile(path, buf.Bytes(), 0o644)
}

// cacheEntries lists the cache files (tests).
func cacheEntries(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".cubin") || strings.HasSuffix(p, ".ptx")) {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}
