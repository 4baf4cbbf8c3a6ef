package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// IDX element types (the third byte of an IDX file's magic number).
const (
	// IDXUbyte is the unsigned-byte element type, the only one ReadIDX decodes.
	IDXUbyte byte = 0x08
)

// idxTypeNames names the element types IDX defines, for messages.
var idxTypeNames = map[byte]string{
	0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16",
	0x0C: "int32", 0x0D: "float32", 0x0E: "float64",
}

// Limits of ReadIDX, so that a bad header fails with an error instead of exhausting
// memory.
const (
	// MaxIDXElements is the most elements (the product of the dimensions) ReadIDX accepts.
	MaxIDXElements = 1 << 31
	// MaxIDXDims is the most dimensions ReadIDX accepts.
	MaxIDXDims = 16
)

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// IDX is a decoded IDX file, the format of MNIST and Fashion-MNIST: a tensor of Dims
// (outermost first) whose elements of type Type are stored row-major in Data.
type IDX struct {
	// Dims holds the size of each dimension, outermost first; each is >= 1.
	Dims []int
	// Type is the element type: IDXUbyte.
	Type byte
	// Data holds the product of Dims elements, one byte each for IDXUbyte.
	Data []byte
}

// ReadIDX decodes one IDX file, plain or gzip-compressed (recognized by its magic
// bytes 0x1f 0x8b). It is strict: the magic must be two zero bytes, the element type
// and the number of dimensions (1..MaxIDXDims); each dimension is a big-endian uint32
// >= 1 and their product at most MaxIDXElements; the data must be exactly that long,
// neither truncated nor followed by trailing bytes. Only unsigned-byte data is
// supported.
func ReadIDX(r io.Reader) (*IDX, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(len(gzipMagic)); err == nil && bytes.Equal(head, gzipMagic) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("decompressing: %w", err)
		}
		defer zr.Close()
		return readIDX(zr, true)
	}
	return readIDX(br, false)
}

// readIDX decodes an uncompressed IDX stream.
func readIDX(r io.Reader, gz bool) (*IDX, error) {
	var magic [4]byte
	if n, err := io.ReadFull(r, magic[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if n == 0 {
				return nil, errors.New("empty file: an IDX file starts with a 4-byte magic number")
			}
			return nil, fmt.Errorf("truncated: expected a 4-byte magic number, got %d bytes", n)
		}
		return nil, readError(err, gz)
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, fmt.Errorf("wrong magic number 0x%02x%02x%02x%02x: an IDX file starts with two zero bytes", magic[0], magic[1], magic[2], magic[3])
	}
	typ, ndims := magic[2], int(magic[3])
	if typ != IDXUbyte {
		if name, ok := idxTypeNames[typ]; ok {
			return nil, fmt.Errorf("element type 0x%02x (%s) is not supported: only 0x08 (unsigned byte)", typ, name)
		}
		return nil, fmt.Errorf("unknown element type 0x%02x: only 0x08 (unsigned byte) is supported", typ)
	}
	if ndims < 1 || ndims > MaxIDXDims {
		return nil, fmt.Errorf("%d dimensions: must be in [1, %d]", ndims, MaxIDXDims)
	}
	header := make([]byte, 4*ndims)
	if n, err := io.ReadFull(r, header); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("truncated: expected %d bytes of dimensions, got %d", len(header), n)
		}
		return nil, readError(err, gz)
	}
	x := &IDX{Type: typ, Dims: make([]int, ndims)}
	size := 1
	for i := range x.Dims {
		d := binary.BigEndian.Uint32(header[4*i:])
		if d == 0 {
			return nil, fmt.Errorf("dimension %d of %d is 0", i, ndims)
		}
		x.Dims[i] = int(d)
		if uint64(size)*uint64(d) > MaxIDXElements {
			return nil, fmt.Errorf("dimensions %v: more than %d elements", x.Dims[:i+1], uint64(MaxIDXElements))
		}
		size *= int(d)
	}
	// Grow the buffer as data arrives instead of trusting the header, and read one byte
	// past the end to catch trailing data (and, for gzip, reach the checksum).
	var buf bytes.Buffer
	buf.Grow(min(size+1, 1<<20))
	if _, err := buf.ReadFrom(io.LimitReader(r, int64(size)+1)); err != nil {
		if gz && errors.Is(err, io.ErrUnexpectedEOF) && buf.Len() <= size {
			return nil, fmt.Errorf("truncated: expected %d bytes, got %d (the gzip stream ends early)", size, buf.Len())
		}
		return nil, readError(err, gz)
	}
	switch got := buf.Len(); {
	case got < size:
		return nil, fmt.Errorf("truncated: expected %d bytes, got %d (the data of dimensions %v)", size, got, x.Dims)
	case got > size:
		return nil, fmt.Errorf("trailing bytes after the %d bytes of data of dimensions %v", size, x.Dims)
	}
	x.Data = buf.Bytes()
	return x, nil
}

// readError wraps an error of the underlying reader, saying whether it decompresses.
func readError(err error, gz bool) error {
	if gz {
		return fmt.Errorf("decompressing: %w", err)
	}
	return fmt.Errorf("read: %w", err)
}

// LabelsPath returns the conventional path of the labels file that belongs to an
// images file: in the file name (after the last '/'), "images" becomes "labels" and
// "idx3" becomes "idx1", so ".../train-images-idx3-ubyte.gz" gives
// ".../train-labels-idx1-ubyte.gz". It works on paths and URIs alike and fails when
// the file name has no "images".
func LabelsPath(imagesPath string) (string, error) {
	dir, name := "", imagesPath
	if i := strings.LastIndex(imagesPath, "/"); i >= 0 {
		dir, name = imagesPath[:i+1], imagesPath[i+1:]
	}
	if !strings.Contains(name, "images") {
		return "", fmt.Errorf("data: cannot derive the labels file from %q: its file name %q does not contain \"images\"", imagesPath, name)
	}
	name = strings.ReplaceAll(name, "images", "labels")
	name = strings.ReplaceAll(name, "idx3", "idx1")
	return dir + name, nil
}

// ImageShape is the shape of each image of a dataset; a row of Dataset.X holds
// Channels*Height*Width values in channel-major (NCHW) order.
type ImageShape struct {
	// Channels is the number of channels (1 for grayscale).
	Channels int
	// Height is the number of pixel rows.
	Height int
	// Width is the number of pixel columns.
	Width int
}

// LoadIDX reads an images file (3-D [n, height, width] or 4-D [n, channels, height,
// width] unsigned bytes) and its labels file (1-D [n]) into a Dataset: X holds each
// pixel divided by 255 (in [0, 1]), row-major NCHW with Dim = channels*height*width,
// and Y the label as a class index. The names are only used in messages, which name
// the file and its problem.
func LoadIDX(images, labels io.Reader, imagesName, labelsName string) (*Dataset, ImageShape, error) {
	img, err := ReadIDX(images)
	if err != nil {
		return nil, ImageShape{}, fmt.Errorf("data: images file %s: %w", imagesName, err)
	}
	lab, err := ReadIDX(labels)
	if err != nil {
		return nil, ImageShape{}, fmt.Errorf("data: labels file %s: %w", labelsName, err)
	}
	var shape ImageShape
	switch len(img.Dims) {
	case 3:
		shape = ImageShape{Channels: 1, Height: img.Dims[1], Width: img.Dims[2]}
	case 4:
		shape = ImageShape{Channels: img.Dims[1], Height: img.Dims[2], Width: img.Dims[3]}
	default:
		return nil, ImageShape{}, fmt.Errorf("data: images file %s has %d dimensions %v: want 3 [n, height, width] or 4 [n, channels, height, width]", imagesName, len(img.Dims), img.Dims)
	}
	if len(lab.Dims) != 1 {
		return nil, ImageShape{}, fmt.Errorf("data: labels file %s has %d dimensions %v: want 1 [n]", labelsName, len(lab.Dims), lab.Dims)
	}
	n := img.Dims[0]
	if lab.Dims[0] != n {
		return nil, ImageShape{}, fmt.Errorf("data: labels file %s has %d labels for %d images (images file %s)", labelsName, lab.Dims[0], n, imagesName)
	}
	d := &Dataset{X: make([]float32, len(img.Data)), Y: make([]float32, n), N: n, Dim: len(img.Data) / n}
	for i, p := range img.Data {
		d.X[i] = float32(p) / 255
	}
	for i, l := range lab.Data {
		d.Y[i] = float32(l)
	}
	return d, shape, nil
}

// NumClasses returns the number of classes of class-index labels: the largest label
// plus 1, or 0 for no labels. Labels outside [0, 2^31) (and NaN) are ignored.
func NumClasses(y []float32) int {
	k := 0
	for _, v := range y {
		if v >= 0 && v < math.MaxInt32 && int(v)+1 > k {
			k = int(v) + 1
		}
	}
	return k
}
