package gpu

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Library names tried in order. cuBLAS and NVRTC carry the CUDA major version in their
// soname; 13 is preferred, 12 still works with a CUDA 12 or newer driver.
var (
	cudaNames   = []string{"libcuda.so.1", "libcuda.so"}
	cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"}
	nvrtcNames  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}
	nvmlNames   = []string{"libnvidia-ml.so.1", "libnvidia-ml.so"}
)

// LibraryPathEnv names a colon-separated list of directories searched for the NVIDIA
// libraries before the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache).
const LibraryPathEnv = "COHORT_CUDA_LIBRARY_PATH"

// LoadConfig says where to look for the NVIDIA libraries.
type LoadConfig struct {
	// Dirs are searched first, in order.
	Dirs []string
	// NoSystemSearch skips the dynamic loader's own search after Dirs.
	NoSystemSearch bool
}

// DefaultLoadConfig searches the directories in $COHORT_CUDA_LIBRARY_PATH, then the
// system.
func DefaultLoadConfig() LoadConfig {
	var dirs []string
	for _, d := range strings.Split(os.Getenv(LibraryPathEnv), ":") {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return LoadConfig{Dirs: dirs}
}

func (c LoadConfig) candidates(names []string) []string {
	var out []string
	for _, d := range c.Dirs {
		for _, n := range names {
			out = append(out, filepath.Join(d, n))
		}
	}
	if !c.NoSystemSearch {
		out = append(out, names...)
	}
	return out
}

// library is one dlopen'ed shared object. Handles are never closed: the CUDA libraries
// do not support being unloaded and reloaded within a process.
type library struct {
	name   string // logical name
	path   string // what dlopen succeeded with
	handle uintptr

	apiMu sync.Mutex
	api   any // the bound function table, built once per library
}

// bindOnce builds the function table for l with build on first use and returns it.
func bindOnce[T any](l *library, build func(*library) (*T, error)) (*T, error) {
	l.apiMu.Lock()
	defer l.apiMu.Unlock()
	if t, ok := l.api.(*T); ok {
		return t, nil
	}
	t, err := build(l)
	if err != nil {
		return nil, err
	}
	l.api = t
	return t, nil
}

var (
	openMu sync.Mutex
	opened = map[string]*library{}
)

// openLibrary loads the first of names that dlopen accepts.
func openLibrary(logical string, names []string, cfg LoadConfig) (*library, error) {
	openMu.Lock()
	defer openMu.Unlock()
	tried := cfg.candidates(names)
	var last string
	for _, p := range tried {
		if l, ok := opened[p]; ok {
			return l, nil
		}
		h, err := dlopen(p)
		if err != nil {
			last = err.Error()
			continue
		}
		l := &library{name: logical, path: p, handle: h}
		opened[p] = l
		return l, nil
	}
	return nil, &LibraryError{Library: logical, Tried: tried, Last: last}
}

// sym binds one C function to a Go function pointer.
type sym struct {
	name string
	fptr any
}

// bind resolves every symbol before registering any, so a missing one is reported as a
// SymbolError instead of purego's panic.
func (l *library) bind(syms []sym) error {
	addrs := make([]uintptr, len(syms))
	for i, s := range syms {
		a, err := dlsym(l.handle, s.name)
		if err != nil || a == 0 {
			return &SymbolError{Library: l.path, Symbol: s.name}
		}
		addrs[i] = a
	}
	for i, s := range syms {
		registerFunc(s.fptr, addrs[i])
	}
	return nil
}

// has reports whether the library exports name.
func (l *library) has(name string) bool {
	a, err := dlsym(l.handle, name)
	return err == nil && a != 0
}

// cString turns a NUL-terminated byte buffer into a string.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
