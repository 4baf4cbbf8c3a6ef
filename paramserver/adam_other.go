//go:build !amd64

package paramserver

// adamVector has no vector version on this architecture: the scalar loop does it all.
func adamVector(p, g, m, v []float32, k *adamConsts) int { return 0 }

// momentumVector has no vector version on this architecture either.
func momentumVector(p, g, v []float32, k *momentumConsts) int { return 0 }

// haveAdamAVX is false: there is no vector Adam here.
const haveAdamAVX = false
