package jobs

import "math"

// Compression is spec.training.compression: how workers compress the tensors they
// exchange with the parameter-server shards. Either FP16, or TopK with or without
// ErrorFeedback:
//
//	compression: {fp16: true}                        # pushes and pulls as IEEE half floats
//	compression: {topK: 0.01, errorFeedback: true}   # pushes: the 1% largest gradient values
//
// The shards decode what they receive and apply the optimizer to float32 values as
// without compression; checkpoints and exports are float32.
type Compression struct {
	// FP16 sends gradients (pushes) and parameters (pulls) as IEEE 754 half-precision
	// values, rounded to nearest even: half the bytes.
	FP16 bool `yaml:"fp16" json:"fp16"`
	// TopK, in (0, 1], sends on each push only that fraction of each shard's gradient
	// values, those of largest magnitude, as indices and values; 0 or absent is off.
	// Pulls stay float32.
	TopK float64 `yaml:"topK" json:"topK"`
	// ErrorFeedback keeps on each worker what compression left out of a push and adds
	// it to the next one, so no gradient is lost, only delayed. It needs topK or fp16.
	ErrorFeedback bool `yaml:"errorFeedback" json:"errorFeedback"`
}

// compression checks spec.training.compression.
func (v *validator) compression() {
	c := v.j.Spec.Training.Compression
	if c == nil {
		return
	}
	const p = "spec.training.compression"
	switch {
	case math.IsNaN(c.TopK) || c.TopK < 0 || c.TopK > 1:
		v.add(p+".topK", "must be greater than 0 and at most 1 (the fraction of gradient values sent), got %g", c.TopK)
	case c.FP16 && c.TopK > 0:
		v.add(p, "set either fp16 or topK, not both")
	case c.ErrorFeedback && !c.FP16 && c.TopK == 0:
		v.add(p+".errorFeedback", "needs topK (or fp16): without compression nothing is left over to feed back")
	case !c.FP16 && c.TopK == 0:
		v.add(p, "compresses nothing: set fp16: true or topK (e.g. {topK: 0.01, errorFeedback: true}), or leave compression out")
	}
}
