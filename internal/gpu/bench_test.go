package gpu

import (
	"math/rand/v2"
	"testing"
)

// GPU benchmarks on the shapes scripts/gpu-check.sh also times with PyTorch: square
// and fashion-cnn dense GEMMs, and fashion-cnn's two convolutions (batch 64) forward
// and backward. They need a real GPU and are skipped without one.

func benchDevice(b *testing.B) *Device {
	b.Helper()
	gpuDev.once.Do(func() { gpuDev.dev, gpuDev.err = Open(DefaultConfig()) })
	if gpuDev.err != nil {
		b.Skipf("skipped: no usable GPU here: %v", gpuDev.err)
	}
	return gpuDev.dev
}

func benchUpload(b *testing.B, d *Device, host []float32) *Buffer {
	b.Helper()
	buf, err := d.Upload(host)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { buf.Free() })
	return buf
}

func BenchmarkGPUGemm(b *testing.B) {
	d := benchDevice(b)
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct {
		name    string
		m, n, k int
	}{
		{"1024x1024x1024", 1024, 1024, 1024},
		{"4096x4096x4096", 4096, 4096, 4096},
		{"fashion-dense-64x1600x128", 64, 128, 1600},
	} {
		b.Run(s.name, func(b *testing.B) {
			a, bb, c := benchUpload(b, d, randSlice(r, s.m*s.k)), benchUpload(b, d, randSlice(r, s.k*s.n)), benchUpload(b, d, make([]float32, s.m*s.n))
			if err := d.Synchronize(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if err := d.Gemm(false, false, s.m, s.n, s.k, 1, a, bb, 0, c); err != nil {
					b.Fatal(err)
				}
			}
			if err := d.Synchronize(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// fashionConvs are fashion-cnn.yaml's convolutions at batch 64.
var fashionConvs = []struct {
	name string
	s    ConvShape
}{
	{"fashion-conv1-64x1x28x28-f32k3", ConvShape{N: 64, C: 1, H: 28, W: 28, F: 32, KH: 3, KW: 3, Stride: 1}},
	{"fashion-conv2-64x32x13x13-f64k3", ConvShape{N: 64, C: 32, H: 13, W: 13, F: 64, KH: 3, KW: 3, Stride: 1}},
}

func BenchmarkGPUConv2D(b *testing.B) {
	d := benchDevice(b)
	r := rand.New(rand.NewPCG(2, 2))
	for _, c := range fashionConvs {
		s := c.s
		out := s.N * s.F * s.OutH() * s.OutW()
		x := benchUpload(b, d, randSlice(r, s.N*s.C*s.H*s.W))
		w := benchUpload(b, d, randSlice(r, s.F*s.C*s.KH*s.KW))
		bias := benchUpload(b, d, randSlice(r, s.F))
		y, dy := benchUpload(b, d, make([]float32, out)), benchUpload(b, d, randSlice(r, out))
		dx, dw, db := benchUpload(b, d, make([]float32, s.N*s.C*s.H*s.W)), benchUpload(b, d, make([]float32, s.F*s.C*s.KH*s.KW)), benchUpload(b, d, make([]float32, s.F))
		cols, dcols := benchUpload(b, d, make([]float32, s.ColsLen())), benchUpload(b, d, make([]float32, s.ColsLen()))
		flops := 2 * float64(s.N) * float64(s.F) * float64(s.OutH()*s.OutW()) * float64(s.C*s.KH*s.KW)
		b.Run(c.name+"/forward", func(b *testing.B) {
			for range b.N {
				if err := d.Conv2D(s, x, w, bias, y, cols); err != nil {
					b.Fatal(err)
				}
			}
			if err := d.Synchronize(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(c.name+"/backward", func(b *testing.B) {
			for range b.N {
				if err := d.Conv2DGrad(s, x, w, dy, dx, dw, db, cols, dcols); err != nil {
					b.Fatal(err)
				}
			}
			if err := d.Synchronize(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(2*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkGPUMLPStep is one attrition-sized MLP step with resident parameters: the
// batch in, forward, backward, the loss out.
func BenchmarkGPUMLPStep(b *testing.B) {
	d := benchDevice(b)
	r := rand.New(rand.NewPCG(3, 3))
	sizes, rows := []int{784, 256, 128, 10}, 256
	m, err := NewMLP(d, sizes, ReLU, rows)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.SetParams(mlpParams(r, sizes)); err != nil {
		b.Fatal(err)
	}
	x, tg := randSlice(r, rows*sizes[0]), oneHot(r, rows, sizes[3])
	for range b.N {
		if _, err := m.Step(x, tg, rows); err != nil {
			b.Fatal(err)
		}
	}
}
