package modeldef

import "testing"

// TestTrainFLOPs checks the FLOP counts of the example networks against sums written
// out by hand from their layer shapes.
func TestTrainFLOPs(t *testing.T) {
	fashion := Architecture{Kind: KindCNN, Inputs: 784, Outputs: 10, Channels: 1, Height: 28, Width: 28, Pool: 2,
		Conv: []Conv{{Filters: 32, Kernel: 3, Stride: 1}, {Filters: 64, Kernel: 3, Stride: 1}}, Dense: []int{128}}
	// conv0 32·9·26·26 (forward and weight gradient only), conv1 64·288·11·11, dense
	// 1600·128, out 128·10 (three products each).
	conv0, conv1, dense, out := 32.0*9*26*26, 64.0*288*11*11, 1600.0*128, 128.0*10
	fashionWant := 2 * (2*conv0 + 3*conv1 + 3*dense + 3*out)
	cifar := Architecture{Kind: KindCNN, Inputs: 3072, Outputs: 10, Channels: 3, Height: 32, Width: 32, Pool: 2,
		Conv: []Conv{{Filters: 64, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 64, Kernel: 3, Stride: 1, Padding: 1},
			{Filters: 128, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 128, Kernel: 3, Stride: 1, Padding: 1}}, Dense: []int{256}}
	c0, c1, c2, c3 := 64.0*27*32*32, 64.0*576*16*16, 128.0*576*8*8, 128.0*1152*4*4
	cifarWant := 2 * (2*c0 + 3*(c1+c2+c3) + 3*512*256 + 3*256*10)
	mlp := Architecture{Kind: KindMLP, Inputs: 48, Outputs: 1, Hidden: []int{64, 32}}
	mlpWant := 2 * (2*48*64 + 3*64*32 + 3*32*1.0)
	lstm := Architecture{Kind: KindLSTM, Inputs: 84, Outputs: 1, Hidden: []int{32}, Steps: 12, Features: 7}
	// Per step (7+32)·128 forward and weight gradient, 32·128 recurrent input gradient;
	// the head 32·1 three times.
	lstmWant := 2 * (12*(2*39*128+32*128) + 3*32.0)
	for _, c := range []struct {
		name string
		a    Architecture
		want float64
	}{{"fashion-cnn", fashion, fashionWant}, {"cifar-cnn", cifar, cifarWant}, {"attrition-mlp", mlp, mlpWant}, {"performance-lstm", lstm, lstmWant}} {
		if got := c.a.TrainFLOPs(); got != c.want {
			t.Errorf("%s: TrainFLOPs = %v, want %v", c.name, got, c.want)
		}
	}
	if got := fashion.TrainFLOPs(); got < 14e6 || got > 16e6 {
		t.Errorf("fashion-cnn: %v FLOPs per row, the issue's estimate is about 16 million", got)
	}
	bad := fashion
	bad.Conv = nil
	if got := bad.TrainFLOPs(); got != 0 {
		t.Errorf("invalid architecture: TrainFLOPs = %v, want 0", got)
	}
}
