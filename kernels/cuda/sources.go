package cuda

import (
	"embed"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The CUDA sources are data: embedded here, compiled by NVRTC for the
// device's architecture when a Backend starts (cached on disk), and their
// kernels looked up by name.
//
//go:embed src/*.cu src/*.cuh
var srcFS embed.FS

// commonHeader is the include name every .cu file uses for src/common.cuh.
const commonHeader = "common.cuh"

// moduleNames lists the modules, one .cu per op pair, in load order.
var moduleNames = []string{
	"elementwise", "embedding", "rmsnorm", "rope", "attention", "attention_gemm",
	"swiglu", "dropout", "cross_entropy", "adamw", "sumsquares",
}

// moduleSource returns a module's source text.
func moduleSource(name string) (string, error) {
	b, err := srcFS.ReadFile("src/" + name + ".cu")
	if err != nil {
		return "", fmt.Errorf("cuda: no embedded source for module %q: %w", name, err)
	}
	return string(b), nil
}

// moduleHeaders returns the headers NVRTC receives (include name -> text).
func moduleHeaders() map[string]string {
	b, err := srcFS.ReadFile("src/" + commonHeader)
	if err != nil {
		panic("cuda: embedded " + commonHeader + " missing: " + err.Error()) // a build defect, not input
	}
	return map[string]string{commonHeader: string(b)}
}

// argKind is the type of one kernel parameter as the launcher packs it.
type argKind uint8

const (
	argPtr argKind = iota + 1 // any pointer: 8 bytes
	argI32                    // int: 4 bytes
	argI64                    // i64 / u64: 8 bytes
	argF32                    // float: 4 bytes
)

func (k argKind) String() string {
	switch k {
	case argPtr:
		return "pointer"
	case argI32:
		return "int"
	case argI64:
		return "64-bit int"
	case argF32:
		return "float"
	}
	return fmt.Sprintf("argKind(%d)", uint8(k))
}

// kernelSig is a kernel's name, module and parameter kinds, read from its
// extern "C" __global__ declaration.
type kernelSig struct {
	module, name string
	params       []string // declarations, for messages
	kinds        []argKind
}

var kernelDeclRE = regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)`)

// parseKernels reads every kernel declaration of a module's source.
func parseKernels(module, src string) ([]kernelSig, error) {
	var sigs []kernelSig
	for _, m := range kernelDeclRE.FindAllStringSubmatch(src, -1) {
		s := kernelSig{module: module, name: m[1]}
		for _, p := range strings.Split(m[2], ",") {
			p = strings.Join(strings.Fields(p), " ")
			if p == "" {
				continue
			}
			k, err := paramKind(p)
			if err != nil {
				return nil, fmt.Errorf("cuda: module %s: kernel %s: %w", module, s.name, err)
			}
			s.params = append(s.params, p)
			s.kinds = append(s.kinds, k)
		}
		sigs = append(sigs, s)
	}
	return sigs, nil
}

// paramKind classifies a parameter declaration such as "const float *x".
func paramKind(decl string) (argKind, error) {
	if strings.Contains(decl, "*") {
		return argPtr, nil
	}
	words := strings.Fields(decl)
	if len(words) < 2 {
		return 0, fmt.Errorf("parameter %q: want a type and a name", decl)
	}
	typ := strings.Join(slices.DeleteFunc(words[:len(words)-1], func(w string) bool { return w == "const" }), " ")
	switch typ {
	case "int":
		return argI32, nil
	case "i64", "u64", "long long", "unsigned long long":
		return argI64, nil
	case "float":
		return argF32, nil
	}
	return 0, fmt.Errorf("parameter %q: type %q is not one the launcher packs (pointer, int, i64, u64, float)", decl, typ)
}

// allKernels parses every module. The result is the registry the launcher
// checks each launch against.
func allKernels() (map[string]kernelSig, error) {
	out := map[string]kernelSig{}
	for _, m := range moduleNames {
		src, err := moduleSource(m)
		if err != nil {
			return nil, err
		}
		sigs, err := parseKernels(m, src)
		if err != nil {
			return nil, err
		}
		if len(sigs) == 0 {
			return nil, fmt.Errorf("cuda: module %s declares no extern \"C\" __global__ kernel", m)
		}
		for _, s := range sigs {
			if prev, dup := out[s.name]; dup {
				return nil, fmt.Errorf("cuda: kernel %s is declared in modules %s and %s", s.name, prev.module, m)
			}
			out[s.name] = s
		}
	}
	return out, nil
}
