//go:build !nogpu

package gpu

import "github.com/ebitengine/purego"

// Built without cgo, the binary still needs the system's dynamic loader to dlopen the
// NVIDIA libraries, so it is linked dynamically against glibc's loader only (no other
// library at build or start time). `-tags nogpu` builds a fully static binary instead.

// Static reports whether this build is a fully static binary without GPU support.
const Static = false

func dlopen(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
}

func dlsym(handle uintptr, name string) (uintptr, error) { return purego.Dlsym(handle, name) }

func registerFunc(fptr any, addr uintptr) { purego.RegisterFunc(fptr, addr) }
