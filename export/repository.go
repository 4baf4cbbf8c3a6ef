package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// Metadata keys written into both model.safetensors and model.onnx (metadata_props).
const (
	// MetaArchitecture holds the Architecture as JSON.
	MetaArchitecture = "cohort.architecture"
	// MetaPreprocessing holds the fitted preprocessing as JSON: a Preprocessor (csv), an
	// image record (idx) or a SequenceScaler (sequence_csv) of worker/data.
	MetaPreprocessing = "cohort.preprocessing"
	// MetaDataFormat is the training data's format: csv, idx or sequence_csv.
	MetaDataFormat = "cohort.data_format"
	// MetaName is the model name (the Triton model directory).
	MetaName = "cohort.name"
	// MetaTask is the task.
	MetaTask = "cohort.task"
	// MetaJobID is the job that trained the model.
	MetaJobID = "cohort.job_id"
	// MetaOpset states the ONNX opset of the export.
	MetaOpset = "cohort.onnx_opset"
	// MetaONNXPreprocessing states the ONNX form, ONNXEmbedded or ONNXSeparate (ONNX
	// metadata and Triton config only).
	MetaONNXPreprocessing = "cohort.onnx_preprocessing"
	// MetaThreshold is a binary model's decision threshold in the embedded ONNX form,
	// written when it is not DefaultThreshold.
	MetaThreshold = "cohort.threshold"
)

// Export formats, as in the job spec (spec.export.formats).
const (
	// FormatONNX writes the Triton model repository (and model.safetensors).
	FormatONNX = "onnx"
	// FormatSafetensors writes model.safetensors.
	FormatSafetensors = "safetensors"
)

// Export file names, relative to the export root.
const (
	// SafetensorsFile is the weights file at the export root.
	SafetensorsFile = "model.safetensors"
	// TritonConfigFile is the Triton model configuration inside the model directory.
	TritonConfigFile = "config.pbtxt"
	// ONNXFile is the model inside the model directory's version 1.
	ONNXFile = "1/model.onnx"
)

// MaxTritonBatch is the max_batch_size of the Triton configuration.
const MaxTritonBatch = 1024

// Bundle is a trained model with what serving it needs.
type Bundle struct {
	// Name is the model name (see SanitizeName).
	Name string
	// Arch is the network.
	Arch Architecture
	// Tensors are the weights in layout order.
	Tensors []Tensor
	// Metadata are extra string entries (job ID, preprocessing, data format, ...);
	// Files adds MetaArchitecture, MetaName, MetaTask and MetaOpset. The embedded ONNX
	// form reads MetaDataFormat and MetaPreprocessing (see DecodePreprocessing).
	Metadata map[string]string
	// ONNXPreprocessing is the ONNX form: ONNXEmbedded (also when empty) or
	// ONNXSeparate.
	ONNXPreprocessing string
	// Threshold is a binary model's decision threshold for the embedded form's label,
	// in (0, 1); 0 means DefaultThreshold.
	Threshold float64
}

// File is one file of an export: a '/'-separated path relative to the export root.
type File struct {
	Path string
	Data []byte
}

// SanitizeName turns a job name into a Triton model name: letters, digits, '-', '_'
// and '.', not starting with '.'; other characters become '_'. Empty gives "model".
func SanitizeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := strings.TrimLeft(b.String(), ".")
	if out == "" {
		return "model"
	}
	if len(out) > 128 {
		out = out[:128]
	}
	return out
}

// Files renders the bundle in the given formats (FormatONNX, FormatSafetensors; at
// least one). Every export has SafetensorsFile at its root; FormatONNX adds the Triton
// model repository entry <name>/config.pbtxt and <name>/1/model.onnx, in the form
// ONNXPreprocessing names (BuildEmbeddedONNX or BuildONNX).
func (b *Bundle) Files(formats []string) ([]File, error) {
	if len(formats) == 0 {
		return nil, errors.New("export: no format given")
	}
	onnxWanted := false
	for _, f := range formats {
		switch f {
		case FormatONNX:
			onnxWanted = true
		case FormatSafetensors:
		default:
			return nil, fmt.Errorf("export: format %q is not one of %s, %s", f, FormatONNX, FormatSafetensors)
		}
	}
	form := b.ONNXPreprocessing
	if form == "" {
		form = ONNXEmbedded
	}
	if form != ONNXEmbedded && form != ONNXSeparate {
		return nil, fmt.Errorf("export: onnx preprocessing %q is not one of %s, %s", form, ONNXEmbedded, ONNXSeparate)
	}
	if b.Name != SanitizeName(b.Name) {
		return nil, fmt.Errorf("export: name %q is not a valid model name (try %q)", b.Name, SanitizeName(b.Name))
	}
	w, err := b.Arch.CheckWeights(b.Tensors)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	archJSON, err := json.Marshal(&b.Arch)
	if err != nil {
		return nil, fmt.Errorf("export: encode architecture: %w", err)
	}
	meta := map[string]string{}
	for k, v := range b.Metadata {
		meta[k] = v
	}
	meta[MetaArchitecture] = string(archJSON)
	meta[MetaName] = b.Name
	meta[MetaTask] = b.Arch.Task
	if onnxWanted {
		meta[MetaOpset] = fmt.Sprint(ONNXOpset)
	}
	stMeta := map[string]string{"format": "pt"}
	for k, v := range meta {
		stMeta[k] = v
	}
	var st bytes.Buffer
	if err := WriteSafetensors(&st, b.Tensors, stMeta); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	files := []File{{Path: SafetensorsFile, Data: st.Bytes()}}
	if onnxWanted {
		m, err := b.onnxModel(form, w, meta)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		sig, err := SignatureOf(m)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		data, err := MarshalONNX(m)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		files = append(files,
			File{Path: b.Name + "/" + TritonConfigFile, Data: []byte(TritonConfig(b.Name, b.Arch.Task, form, sig))},
			File{Path: b.Name + "/" + ONNXFile, Data: data})
	}
	return files, nil
}

// onnxModel builds the ONNX model of the given form with the metadata meta (to which
// it adds MetaONNXPreprocessing and, where it applies, MetaThreshold).
func (b *Bundle) onnxModel(form string, w Weights, meta map[string]string) (*onnx.ModelProto, error) {
	om := map[string]string{MetaONNXPreprocessing: form}
	for k, v := range meta {
		om[k] = v
	}
	if form == ONNXSeparate {
		return BuildONNX(&b.Arch, w, b.Name, om)
	}
	p, err := DecodePreprocessing(meta[MetaDataFormat], meta[MetaPreprocessing], &b.Arch)
	if err != nil {
		return nil, fmt.Errorf("onnx preprocessing %s: %w (the %s form exports the network alone)", form, err, ONNXSeparate)
	}
	if b.Threshold != 0 && b.Arch.Task == TaskBinary {
		om[MetaThreshold] = strconv.FormatFloat(b.Threshold, 'g', -1, 64)
	}
	return BuildEmbeddedONNX(&b.Arch, w, p, b.Threshold, b.Name, om)
}

// TritonConfig returns the config.pbtxt of an exported ONNX model for Triton's
// onnxruntime backend: max_batch_size MaxTritonBatch, the graph's inputs and outputs of
// sig with their Triton data types (TYPE_FP32, TYPE_STRING, TYPE_UINT8) and their dims
// without the batch dimension, which Triton adds, and the task and ONNX form as
// parameters.
func TritonConfig(name, task, form string, sig ONNXSignature) string {
	tensors := func(ts []ONNXTensor) string {
		items := make([]string, len(ts))
		for i, t := range ts {
			dims := make([]string, len(t.Dims))
			for j, d := range t.Dims {
				dims[j] = strconv.Itoa(d)
			}
			items[i] = fmt.Sprintf("  {\n    name: %s\n    data_type: %s\n    dims: [ %s ]\n  }", pbtxtQuote(t.Name), t.TritonType(), strings.Join(dims, ", "))
		}
		return strings.Join(items, ",\n")
	}
	return fmt.Sprintf(`name: %s
platform: "onnxruntime_onnx"
max_batch_size: %d
input [
%s
]
output [
%s
]
parameters [
  {
    key: "cohort.task"
    value: { string_value: %s }
  },
  {
    key: "cohort.onnx_preprocessing"
    value: { string_value: %s }
  }
]
`, pbtxtQuote(name), MaxTritonBatch, tensors(sig.Inputs), tensors(sig.Outputs), pbtxtQuote(task), pbtxtQuote(form))
}

// pbtxtQuote quotes s as a protobuf text-format string: '"', '\\' and control bytes
// escaped (octal), other bytes (UTF-8 included) as they are.
func pbtxtQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Model is a model read back from model.safetensors.
type Model struct {
	// Name is the model name (MetaName; "model" when absent).
	Name string
	// Arch is the network.
	Arch Architecture
	// Weights are the checked weights.
	Weights Weights
	// Metadata is the file's metadata.
	Metadata map[string]string
}

// ReadModel reads a model.safetensors written by Bundle.Files: the weights and the
// architecture in its metadata, checked against each other.
func ReadModel(r io.Reader) (*Model, error) {
	tensors, meta, err := ReadSafetensors(r)
	if err != nil {
		return nil, err
	}
	raw, ok := meta[MetaArchitecture]
	if !ok {
		return nil, fmt.Errorf("safetensors: metadata %q is missing (not a Cohort export)", MetaArchitecture)
	}
	m := &Model{Name: meta[MetaName], Metadata: meta}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m.Arch); err != nil {
		return nil, fmt.Errorf("safetensors: metadata %q: %w", MetaArchitecture, err)
	}
	if m.Weights, err = m.Arch.CheckWeights(tensors); err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if m.Name == "" {
		m.Name = "model"
	}
	if m.Name != SanitizeName(m.Name) {
		return nil, fmt.Errorf("safetensors: metadata %q: %q is not a valid model name", MetaName, m.Name)
	}
	return m, nil
}
