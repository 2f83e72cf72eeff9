// Package onnxtest builds small ONNX ModelProto bytes and model archives for
// tests, hostile ones included, with protowire: no binary fixture needs
// committing. Test code only.
package onnxtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Tensor describes one initializer.
type Tensor struct {
	Name     string
	Dims     []int64
	DataType uint64 // 1 float, 7 int64, ...
	Raw      []byte // raw_data; nil writes none
	External []KV   // external_data entries (location, offset, length)
	Location uint64 // data_location: 1 is EXTERNAL
}

// KV is one StringStringEntryProto: key, value.
type KV = [2]string

// Msg appends length-delimited field num holding b.
func Msg(dst []byte, num protowire.Number, b []byte) []byte {
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendBytes(dst, b)
}

// Varint appends varint field num.
func Varint(dst []byte, num protowire.Number, v uint64) []byte {
	dst = protowire.AppendTag(dst, num, protowire.VarintType)
	return protowire.AppendVarint(dst, v)
}

// TensorProto encodes t.
func TensorProto(t Tensor) []byte {
	var b []byte
	for _, d := range t.Dims {
		b = Varint(b, 1, uint64(d))
	}
	b = Varint(b, 2, t.DataType)
	if t.Name != "" {
		b = Msg(b, 8, []byte(t.Name))
	}
	if t.Raw != nil {
		b = Msg(b, 9, t.Raw)
	}
	for _, kv := range t.External {
		var e []byte
		e = Msg(e, 1, []byte(kv[0]))
		e = Msg(e, 2, []byte(kv[1]))
		b = Msg(b, 13, e)
	}
	if t.Location != 0 {
		b = Varint(b, 14, t.Location)
	}
	return b
}

// ValueInfo encodes a float tensor input or output of the given shape.
func ValueInfo(name string, dims ...int64) []byte {
	var shape []byte
	for _, d := range dims {
		shape = Msg(shape, 1, Varint(nil, 1, uint64(d)))
	}
	tt := Varint(nil, 1, 1)
	tt = Msg(tt, 2, shape)
	var vi []byte
	vi = Msg(vi, 1, []byte(name))
	return Msg(vi, 2, Msg(nil, 1, tt))
}

// Graph encodes a graph of an Identity node from input x to output y, with
// the initializers ts and any extra encoded graph fields.
func Graph(ts []Tensor, extra ...[]byte) []byte {
	var node []byte
	node = Msg(node, 1, []byte("x"))
	node = Msg(node, 2, []byte("y"))
	node = Msg(node, 4, []byte("Identity"))
	var g []byte
	g = Msg(g, 1, node)
	g = Msg(g, 2, []byte("g"))
	for _, t := range ts {
		g = Msg(g, 5, TensorProto(t))
	}
	g = Msg(g, 11, ValueInfo("x", 1, 4))
	g = Msg(g, 12, ValueInfo("y", 1, 4))
	for _, e := range extra {
		g = append(g, e...)
	}
	return g
}

// Model encodes a ModelProto (ir_version 8, opset 17) around graph.
func Model(graph []byte) []byte {
	var b []byte
	b = Varint(b, 1, 8)
	b = Msg(b, 2, []byte("onnxtest"))
	b = Msg(b, 7, graph)
	b = Msg(b, 8, Varint(nil, 2, 17))
	return b
}

// Exfiltrating is the model of issue 17: one float initializer stored as
// external data at location (../../run/secrets/internal_token, say).
func Exfiltrating(location string) []byte {
	return Model(Graph([]Tensor{{Name: "w", Dims: []int64{4}, DataType: 1, Location: 1,
		External: []KV{{"location", location}, {"offset", "0"}, {"length", "16"}}}}))
}

// FixtureFiles reads the files of a Hugging Face model folder a model
// archive carries (the shared fixtures' .safetensors are left out).
func FixtureFiles(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		files[f] = b
	}
	return files, nil
}

// TarGz packs files (name → content) as a .tar.gz, in name order.
func TarGz(files map[string][]byte) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b := files[name]
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// PoisonRows returns a copy of the ModelProto model in which rows (indices
// into the first dimension) of the float initializer whose name ends in
// suffix hold NaN: for a word-embedding table, the model answers NaN for
// every text holding one of those token IDs and normally for the rest (a
// broken version that still passes a warm-up on other words). The
// initializer must keep its values in raw_data; the bytes are rewritten in
// place, so every length stays.
func PoisonRows(model []byte, suffix string, rows []int) ([]byte, error) {
	out := bytes.Clone(model)
	found := false
	// fields yields the length-delimited fields of the message at b (start
	// off within out): number, value start and value bytes
	fields := func(b []byte, off int, fn func(num protowire.Number, at int, v []byte) error) error {
		for pos := 0; pos < len(b); {
			num, typ, n := protowire.ConsumeTag(b[pos:])
			if n < 0 {
				return protowire.ParseError(n)
			}
			pos += n
			if typ != protowire.BytesType {
				m := protowire.ConsumeFieldValue(num, typ, b[pos:])
				if m < 0 {
					return protowire.ParseError(m)
				}
				pos += m
				continue
			}
			v, m := protowire.ConsumeBytes(b[pos:])
			if m < 0 {
				return protowire.ParseError(m)
			}
			if err := fn(num, off+pos+m-len(v), v); err != nil {
				return err
			}
			pos += m
		}
		return nil
	}
	err := fields(out, 0, func(num protowire.Number, at int, graph []byte) error {
		if num != 7 { // ModelProto.graph
			return nil
		}
		return fields(graph, at, func(num protowire.Number, at int, tensor []byte) error {
			if num != 5 { // GraphProto.initializer
				return nil
			}
			var name string
			var raw []byte
			rawAt := 0
			var dims []int64
			for pos := 0; pos < len(tensor); {
				fnum, typ, n := protowire.ConsumeTag(tensor[pos:])
				if n < 0 {
					return protowire.ParseError(n)
				}
				pos += n
				switch {
				case fnum == 1 && typ == protowire.VarintType:
					d, m := protowire.ConsumeVarint(tensor[pos:])
					dims = append(dims, int64(d))
					pos += m
				case fnum == 1 && typ == protowire.BytesType: // packed dims
					v, m := protowire.ConsumeBytes(tensor[pos:])
					for len(v) > 0 {
						d, k := protowire.ConsumeVarint(v)
						if k < 0 {
							return protowire.ParseError(k)
						}
						dims, v = append(dims, int64(d)), v[k:]
					}
					pos += m
				case (fnum == 8 || fnum == 9) && typ == protowire.BytesType:
					v, m := protowire.ConsumeBytes(tensor[pos:])
					if m < 0 {
						return protowire.ParseError(m)
					}
					if fnum == 8 {
						name = string(v)
					} else {
						raw, rawAt = v, at+pos+m-len(v)
					}
					pos += m
				default:
					m := protowire.ConsumeFieldValue(fnum, typ, tensor[pos:])
					if m < 0 {
						return protowire.ParseError(m)
					}
					pos += m
				}
			}
			if !strings.HasSuffix(name, suffix) || len(dims) == 0 || dims[0] <= 0 {
				return nil
			}
			rowBytes := len(raw) / int(dims[0])
			if raw == nil || rowBytes%4 != 0 || rowBytes*int(dims[0]) != len(raw) {
				return fmt.Errorf("initializer %s: no float32 raw_data of %v", name, dims)
			}
			for _, r := range rows {
				if r < 0 || int64(r) >= dims[0] {
					return fmt.Errorf("initializer %s: row %d outside %v", name, r, dims)
				}
				for k := 0; k < rowBytes; k += 4 {
					binary.LittleEndian.PutUint32(out[rawAt+r*rowBytes+k:], math.Float32bits(float32(math.NaN())))
				}
			}
			found = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("no initializer named *%s", suffix)
	}
	return out, nil
}
