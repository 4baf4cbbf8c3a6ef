package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// encodeIDX writes an IDX file of element type typ with the given dimensions and data.
func encodeIDX(typ byte, dims []int, data []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, typ, byte(len(dims))})
	for _, d := range dims {
		_ = binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	return b.Bytes()
}

func gzipIDX(t testing.TB, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// idxPattern returns n bytes that are not all equal.
func idxPattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*37 + i/7)
	}
	return p
}

func TestReadIDXRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		dims []int
	}{
		{"labels", []int{5}},
		{"images", []int{3, 4, 2}},
		{"channels", []int{2, 3, 2, 2}},
		{"large dimension", []int{70000}},
	}
	for _, tt := range tests {
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/gzip=%v", tt.name, gz), func(t *testing.T) {
				size := 1
				for _, d := range tt.dims {
					size *= d
				}
				data := idxPattern(size)
				raw := encodeIDX(IDXUbyte, tt.dims, data)
				if gz {
					raw = gzipIDX(t, raw)
				}
				got, err := ReadIDX(bytes.NewReader(raw))
				if err != nil {
					t.Fatalf("ReadIDX: %v", err)
				}
				if got.Type != IDXUbyte || !slices.Equal(got.Dims, tt.dims) || !bytes.Equal(got.Data, data) {
					t.Fatalf("got type 0x%02x dims %v, %d bytes; want dims %v, %d bytes", got.Type, got.Dims, len(got.Data), tt.dims, len(data))
				}
			})
		}
	}
}

func TestReadIDXErrors(t *testing.T) {
	good := encodeIDX(IDXUbyte, []int{2, 3}, idxPattern(6))
	corruptGzip := gzipIDX(t, good)
	corruptGzip[len(corruptGzip)-6] ^= 0xff // the CRC-32 in the trailer
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"short magic", []byte{0, 0, 8}, "truncated: expected a 4-byte magic number, got 3 bytes"},
		{"wrong magic", append([]byte{0x89, 'P', 'N', 'G'}, good[4:]...), "wrong magic number 0x89504e47"},
		{"wrong magic second byte", append([]byte{0, 1}, good[2:]...), "wrong magic number 0x00010802"},
		{"float type", encodeIDX(0x0D, []int{2}, idxPattern(8)), "element type 0x0d (float32) is not supported"},
		{"int32 type", encodeIDX(0x0C, []int{2}, idxPattern(8)), "element type 0x0c (int32) is not supported"},
		{"unknown type", encodeIDX(0x42, []int{2}, idxPattern(2)), "unknown element type 0x42"},
		{"zero dims", []byte{0, 0, 8, 0}, "0 dimensions: must be in [1, 16]"},
		{"too many dims", encodeIDX(IDXUbyte, make([]int, 17), nil), "17 dimensions"},
		{"zero dimension", encodeIDX(IDXUbyte, []int{3, 0, 2}, nil), "dimension 1 of 3 is 0"},
		{"truncated dimensions", good[:9], "truncated: expected 8 bytes of dimensions, got 5"},
		{"truncated data", good[:len(good)-2], "truncated: expected 6 bytes, got 4"},
		{"truncated gzip", gzipIDX(t, good)[:20], "truncated"},
		{"header only", good[:12], "truncated: expected 6 bytes, got 0"},
		{"trailing garbage", append(slices.Clone(good), 0), "trailing bytes after the 6 bytes of data of dimensions [2 3]"},
		{"trailing garbage in gzip", gzipIDX(t, append(slices.Clone(good), 1, 2)), "trailing bytes"},
		{"too many elements", encodeIDX(IDXUbyte, []int{1 << 16, 1 << 16}, nil), "more than 2147483648 elements"},
		{"overflowing dimensions", encodeIDX(IDXUbyte, []int{math.MaxUint32, math.MaxUint32, math.MaxUint32}, nil), "more than 2147483648 elements"},
		{"huge declared size, little data", encodeIDX(IDXUbyte, []int{1 << 30}, idxPattern(10)), "truncated: expected 1073741824 bytes, got 10"},
		{"gzip checksum", corruptGzip, "decompressing: gzip: invalid checksum"},
		{"gzip garbage", []byte{0x1f, 0x8b, 1, 2, 3}, "decompressing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadIDX(bytes.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadIDX = %+v, %v; want an error containing %q", got, err, tt.want)
			}
		})
	}
}

func TestLabelsPath(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"/data/train-images-idx3-ubyte.gz", "/data/train-labels-idx1-ubyte.gz", ""},
		{"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", ""},
		{"s3://bucket/fashion/train-images-idx3-ubyte.gz", "s3://bucket/fashion/train-labels-idx1-ubyte.gz", ""},
		{"file://jobs/data/images.idx", "file://jobs/data/labels.idx", ""},
		// Only the file name changes, never the directories.
		{"/images/idx3/train-images-idx3-ubyte", "/images/idx3/train-labels-idx1-ubyte", ""},
		{"/images/train-idx3-ubyte", "", `file name "train-idx3-ubyte" does not contain "images"`},
		{"", "", `file name "" does not contain "images"`},
		{"/data/images/", "", `file name "" does not contain "images"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := LabelsPath(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("LabelsPath(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("LabelsPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestLoadIDX(t *testing.T) {
	pixels := idxPattern(3 * 2 * 2 * 3)
	pixels[0], pixels[1] = 0, 255
	tests := []struct {
		name  string
		dims  []int
		shape ImageShape
		gz    bool
	}{
		{"grayscale", []int{3, 4, 3}, ImageShape{Channels: 1, Height: 4, Width: 3}, false},
		{"grayscale gzip", []int{3, 4, 3}, ImageShape{Channels: 1, Height: 4, Width: 3}, true},
		{"channels", []int{3, 2, 2, 3}, ImageShape{Channels: 2, Height: 2, Width: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := encodeIDX(IDXUbyte, tt.dims, pixels)
			lab := encodeIDX(IDXUbyte, []int{3}, []byte{7, 0, 2})
			if tt.gz {
				img, lab = gzipIDX(t, img), gzipIDX(t, lab)
			}
			d, shape, err := LoadIDX(bytes.NewReader(img), bytes.NewReader(lab), "img", "lab")
			if err != nil {
				t.Fatalf("LoadIDX: %v", err)
			}
			if shape != tt.shape || d.N != 3 || d.Dim != 12 || len(d.X) != 36 {
				t.Fatalf("shape %+v, N %d, Dim %d, len(X) %d; want %+v, 3, 12, 36", shape, d.N, d.Dim, len(d.X), tt.shape)
			}
			for i, p := range pixels {
				if want := float32(p) / 255; d.X[i] != want {
					t.Fatalf("X[%d] = %v, want %v", i, d.X[i], want)
				}
			}
			if d.X[0] != 0 || d.X[1] != 1 {
				t.Fatalf("pixels 0 and 255 give %v and %v, want 0 and 1", d.X[0], d.X[1])
			}
			if !slices.Equal(d.Y, []float32{7, 0, 2}) || NumClasses(d.Y) != 8 {
				t.Fatalf("Y = %v (%d classes), want [7 0 2] (8 classes)", d.Y, NumClasses(d.Y))
			}
		})
	}
}

func TestLoadIDXErrors(t *testing.T) {
	images := encodeIDX(IDXUbyte, []int{4, 2, 2}, idxPattern(16))
	labels := encodeIDX(IDXUbyte, []int{4}, []byte{1, 2, 3, 0})
	tests := []struct {
		name     string
		img, lab []byte
		want     string
	}{
		{"images truncated", images[:len(images)-1], labels, "data: images file train-images-idx3-ubyte: truncated: expected 16 bytes, got 15"},
		{"images wrong magic", append([]byte{1}, images[1:]...), labels, "data: images file train-images-idx3-ubyte: wrong magic number"},
		{"images wrong type", encodeIDX(0x0E, []int{4, 2, 2}, idxPattern(128)), labels, "images file train-images-idx3-ubyte: element type 0x0e (float64)"},
		{"images trailing", append(slices.Clone(images), 9), labels, "images file train-images-idx3-ubyte: trailing bytes"},
		{"images zero dims", []byte{0, 0, 8, 0}, labels, "images file train-images-idx3-ubyte: 0 dimensions"},
		{"labels truncated", images, labels[:len(labels)-1], "data: labels file train-labels-idx1-ubyte: truncated: expected 4 bytes, got 3"},
		{"labels wrong magic", images, append([]byte{0, 0x80}, labels[2:]...), "labels file train-labels-idx1-ubyte: wrong magic number"},
		{"labels count mismatch", images, encodeIDX(IDXUbyte, []int{3}, []byte{1, 2, 3}), "data: labels file train-labels-idx1-ubyte has 3 labels for 4 images (images file train-images-idx3-ubyte)"},
		{"images 2-D", encodeIDX(IDXUbyte, []int{4, 4}, idxPattern(16)), labels, "images file train-images-idx3-ubyte has 2 dimensions [4 4]: want 3 [n, height, width] or 4"},
		{"images 5-D", encodeIDX(IDXUbyte, []int{4, 1, 1, 2, 2}, idxPattern(16)), labels, "has 5 dimensions"},
		{"labels 2-D", images, encodeIDX(IDXUbyte, []int{4, 1}, []byte{1, 2, 3, 0}), "labels file train-labels-idx1-ubyte has 2 dimensions [4 1]: want 1 [n]"},
		{"files swapped", labels, images, "images file train-images-idx3-ubyte has 1 dimensions [4]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, err := LoadIDX(bytes.NewReader(tt.img), bytes.NewReader(tt.lab), "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadIDX = %v, %v; want an error containing %q", d, err, tt.want)
			}
		})
	}
}

func TestNumClasses(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		y    []float32
		want int
	}{
		{nil, 0},
		{[]float32{0}, 1},
		{[]float32{9, 0, 3}, 10},
		{[]float32{0, 1, 1, 0}, 2},
		{[]float32{-1, 2, nan, float32(math.Inf(1)), 1e30}, 3},
	}
	for _, tt := range tests {
		if got := NumClasses(tt.y); got != tt.want {
			t.Errorf("NumClasses(%v) = %d, want %d", tt.y, got, tt.want)
		}
	}
}

func FuzzReadIDX(f *testing.F) {
	good := encodeIDX(IDXUbyte, []int{2, 2, 3}, idxPattern(12))
	for _, seed := range [][]byte{
		good,
		gzipIDX(f, good),
		encodeIDX(IDXUbyte, []int{5}, idxPattern(5)),
		good[:10],
		append(slices.Clone(good), 0),
		encodeIDX(0x0D, []int{1}, idxPattern(4)),
		encodeIDX(IDXUbyte, []int{1 << 16, 1 << 16}, nil),
		{0, 0, 8, 0},
		{0x1f, 0x8b},
		nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		x, err := ReadIDX(bytes.NewReader(in))
		if err != nil {
			if x != nil {
				t.Fatalf("ReadIDX returned %+v with error %v", x, err)
			}
			return
		}
		size := 1
		for _, d := range x.Dims {
			if d < 1 {
				t.Fatalf("dimension %d in %v", d, x.Dims)
			}
			size *= d
		}
		if x.Type != IDXUbyte || len(x.Dims) < 1 || len(x.Dims) > MaxIDXDims || len(x.Data) != size || size > MaxIDXElements {
			t.Fatalf("type 0x%02x, dims %v, %d bytes of data", x.Type, x.Dims, len(x.Data))
		}
		// A plain file re-encodes to exactly its bytes.
		if !bytes.HasPrefix(in, gzipMagic) && !bytes.Equal(encodeIDX(x.Type, x.Dims, x.Data), in) {
			t.Fatalf("re-encoding %v does not give the input back", x.Dims)
		}
	})
}

// BenchmarkLoadIDXFashion loads the Fashion-MNIST test set (10000 images) and checks
// it: from /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)
// when installed, else from synthetic files of the same shape.
func BenchmarkLoadIDXFashion(b *testing.B) {
	const dir = "/usr/share/datasets/fashion-mnist"
	images, err := readFirstIDX(filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), filepath.Join(dir, "t10k-images-idx3-ubyte"))
	var labels []byte
	if err == nil {
		imagesPath := images.path
		var labelsPath string
		if labelsPath, err = LabelsPath(imagesPath); err != nil {
			b.Fatal(err)
		}
		var raw []byte
		if raw, err = os.ReadFile(labelsPath); err != nil {
			b.Fatalf("%s exists but its labels file does not: %v", imagesPath, err)
		}
		labels = raw
		b.Logf("loading %s and %s", imagesPath, labelsPath)
	} else {
		b.Logf("%s not installed (%v): loading synthetic files", dir, err)
		lab := make([]byte, 10000)
		for i := range lab {
			lab[i] = byte(i % 10)
		}
		images.data = gzipIDX(b, encodeIDX(IDXUbyte, []int{10000, 28, 28}, idxPattern(10000*28*28)))
		labels = gzipIDX(b, encodeIDX(IDXUbyte, []int{10000}, lab))
	}
	b.SetBytes(int64(len(images.data) + len(labels)))
	b.ReportAllocs()
	for b.Loop() {
		d, shape, err := LoadIDX(bytes.NewReader(images.data), bytes.NewReader(labels), "t10k-images", "t10k-labels")
		if err != nil {
			b.Fatal(err)
		}
		if d.N != 10000 || shape != (ImageShape{Channels: 1, Height: 28, Width: 28}) || d.Dim != 784 || NumClasses(d.Y) != 10 {
			b.Fatalf("N %d, shape %+v, Dim %d, %d classes; want 10000 28x28x1 images of 10 classes", d.N, shape, d.Dim, NumClasses(d.Y))
		}
	}
}

type idxFile struct {
	path string
	data []byte
}

// readFirstIDX reads the first of paths that exists.
func readFirstIDX(paths ...string) (idxFile, error) {
	var err error
	for _, p := range paths {
		var data []byte
		if data, err = os.ReadFile(p); err == nil {
			return idxFile{path: p, data: data}, nil
		}
	}
	return idxFile{}, err
}
