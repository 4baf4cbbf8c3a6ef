package model

import (
	"math/rand/v2"

	"github.com/cohort-dev/cohort/modeldef"
)

// DropoutStream draws a model's inverted-dropout masks: those of its k-th Gradient call
// come from PCG(Seed, k), each value 1/(1-rate) where the unit is kept and 0 where it is
// dropped, the masks in the order the network applies them and each BatchSize×width
// row-major. Every device draws its masks here, so a job trains the same on the CPU and
// on a GPU.
type DropoutStream struct {
	pcg *rand.PCG
	rng *rand.Rand
}

// NewDropoutStream returns a stream; it is not safe for concurrent use.
func NewDropoutStream() *DropoutStream {
	pcg := rand.NewPCG(0, 0)
	return &DropoutStream{pcg: pcg, rng: rand.New(pcg)}
}

// Fill fills masks for call k of a model seeded with seed and dropping rate.
func (d *DropoutStream) Fill(masks [][]float32, seed int64, k uint64, rate float64) {
	fillMasks(d, masks, seed, k, rate)
}

func fillMasks[T float](d *DropoutStream, masks [][]T, seed int64, k uint64, rate float64) {
	d.pcg.Seed(uint64(seed), k)
	keep := 1 - rate
	scale := T(1 / keep)
	for _, m := range masks {
		for i := range m {
			if d.rng.Float64() < keep {
				m[i] = scale
			} else {
				m[i] = 0
			}
		}
	}
}

// DropoutWidths returns the width of each dropout mask of a's network, in the order
// they are drawn: an MLP's hidden layers; a CNN's dense layers; an LSTM's layers (one
// mask per layer, shared by its steps), then its dense layers.
func DropoutWidths(a modeldef.Architecture) []int {
	switch a.Kind {
	case modeldef.KindMLP:
		return append([]int(nil), a.Hidden...)
	case modeldef.KindCNN:
		return append([]int(nil), a.Dense...)
	case modeldef.KindLSTM:
		return append(append([]int(nil), a.Hidden...), a.Dense...)
	}
	return nil
}
