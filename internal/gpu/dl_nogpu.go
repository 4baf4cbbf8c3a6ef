//go:build nogpu

package gpu

import "errors"

// Static reports whether this build is a fully static binary without GPU support.
const Static = true

// errNoGPUBuild is what every library load reports in a `-tags nogpu` build.
var errNoGPUBuild = errors.New("this cohort binary was built with -tags nogpu (fully static, no dynamic loader): GPU support is compiled out")

func dlopen(string) (uintptr, error) { return 0, errNoGPUBuild }

func dlsym(uintptr, string) (uintptr, error) { return 0, errNoGPUBuild }

func registerFunc(any, uintptr) {}
