package onnxcheck

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Limits bound what a model may declare and what the walk may cost.
type Limits struct {
	MaxDepth         int   // graphs nested in attributes, types nested in types
	MaxFields        int64 // protobuf fields walked in all (bounds time)
	MaxDim           int64 // one dimension of a tensor or of a declared shape
	MaxRank          int   // dimensions of one tensor
	MaxExternalFiles int   // distinct external data files
	MaxLocation      int   // bytes of an external data location
}

// DefaultLimits fit every Hugging Face ONNX export: no real dimension is
// near 2^32 and no transformer nests graphs 16 deep.
var DefaultLimits = Limits{MaxDepth: 16, MaxFields: 20_000_000, MaxDim: 1 << 32, MaxRank: 16, MaxExternalFiles: 1000, MaxLocation: 1024}

// ErrRefused is wrapped by every refusal of a model.
var ErrRefused = errors.New("onnx model refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, a...))
}

// Report is what the walk learned.
type Report struct {
	IRVersion       int64
	Tensors         int      // initializers and constant tensors checked
	ExternalTensors int      // of which stored as external data
	ExternalFiles   []string // distinct external data locations, in order of first use
}

// Resolver returns the size of the external data file at location, or an
// error when the location is not acceptable.
type Resolver func(location string) (int64, error)

// CheckFile checks dir/name with external data resolved inside dir by
// DirResolver.
func CheckFile(dir, name string, lim Limits) (Report, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return Report{}, fmt.Errorf("onnx check: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Report{}, fmt.Errorf("onnx check: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Report{}, refuse("%s is not a regular file", name)
	}
	return Check(f, st.Size(), DirResolver(dir), lim)
}

// Check walks the ONNX ModelProto in r (size bytes). ext resolves external
// data locations; nil refuses every tensor stored outside the model. It never
// holds more than a small window of the file in memory.
func Check(r io.ReaderAt, size int64, ext Resolver, lim Limits) (rep Report, err error) {
	if size < 2 {
		return Report{}, refuse("%d bytes is too small for an ONNX model", size)
	}
	w := &walker{src: source{r: r, size: size}, lim: lim, ext: ext, fileSize: size, extSizes: map[string]int64{}}
	sawIR, sawGraph := false, false
	err = w.message(region{0, size}, func(num protowire.Number, f field) error {
		switch num {
		case 1: // ir_version
			if f.typ != protowire.VarintType {
				return refuse("ir_version of wire type %d", f.typ)
			}
			sawIR, w.rep.IRVersion = true, int64(f.v)
		case 7: // graph
			if err := f.once(&sawGraph, "graph"); err != nil {
				return err
			}
			return w.graph(f.body, 0)
		case 20: // training_info
			return w.need(f, func(b region) error { return w.trainingInfo(b, 0) })
		case 25: // functions
			return w.need(f, func(b region) error { return w.function(b, 0) })
		}
		return nil
	})
	if err != nil {
		return w.rep, err
	}
	if !sawIR {
		return w.rep, refuse("not an ONNX model (no ir_version)")
	}
	if !sawGraph {
		return w.rep, refuse("not an ONNX model (no graph)")
	}
	return w.rep, nil
}

// DirResolver accepts a location only when it is a plain relative path inside
// dir (no "..", not absolute, no backslash or NUL) naming a regular file, with
// no symlink on the way; it answers the file's size.
func DirResolver(dir string) Resolver {
	return func(loc string) (int64, error) {
		if loc == "" || strings.ContainsAny(loc, "\\\x00") || filepath.IsAbs(loc) || !filepath.IsLocal(loc) {
			return 0, refuse("external data location %q is not a plain relative name", loc)
		}
		parts := strings.Split(loc, "/")
		for _, p := range parts {
			if p == ".." || p == "." || p == "" {
				return 0, refuse("external data location %q is not a plain relative name", loc)
			}
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			return 0, fmt.Errorf("onnx check: %w", err)
		}
		defer root.Close()
		for i := range parts {
			st, err := root.Lstat(strings.Join(parts[:i+1], "/"))
			if err != nil {
				return 0, refuse("external data file %q is not in the model folder", loc)
			}
			last := i == len(parts)-1
			if st.Mode()&os.ModeSymlink != 0 || (last && !st.Mode().IsRegular()) || (!last && !st.IsDir()) {
				return 0, refuse("external data location %q is a link or not a regular file", loc)
			}
			if last {
				return st.Size(), nil
			}
		}
		return 0, refuse("external data location %q is empty", loc)
	}
}

type region struct{ off, end int64 }

func (r region) len() int64 { return r.end - r.off }

// field is one protobuf field: v for varints, body for length-delimited ones.
type field struct {
	typ  protowire.Type
	v    uint64
	body region
}

// once refuses a singular message field seen twice: protobuf would merge the
// two, which no exporter writes and which could split a tensor's dims from
// its data.
func (f field) once(seen *bool, name string) error {
	if f.typ != protowire.BytesType {
		return refuse("%s of wire type %d", name, f.typ)
	}
	if *seen {
		return refuse("%s appears twice", name)
	}
	*seen = true
	return nil
}

type walker struct {
	src      source
	lim      Limits
	ext      Resolver
	fileSize int64
	fields   int64
	extSizes map[string]int64
	rep      Report
}

// need calls fn on a length-delimited field and refuses any other wire type.
func (w *walker) need(f field, fn func(region) error) error {
	if f.typ != protowire.BytesType {
		return refuse("message field of wire type %d", f.typ)
	}
	return fn(f.body)
}

// message walks the fields of the message in reg, calling fn for each.
func (w *walker) message(reg region, fn func(protowire.Number, field) error) error {
	off := reg.off
	for off < reg.end {
		w.fields++
		if w.lim.MaxFields > 0 && w.fields > w.lim.MaxFields {
			return refuse("more than %d protobuf fields", w.lim.MaxFields)
		}
		num, typ, n := protowire.ConsumeTag(w.src.window(off, reg.end, 10))
		if n < 0 {
			return refuse("malformed protobuf at byte %d", off)
		}
		off += int64(n)
		f := field{typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(w.src.window(off, reg.end, 10))
			if n < 0 {
				return refuse("malformed varint at byte %d", off)
			}
			off += int64(n)
		case protowire.Fixed32Type:
			off += 4
		case protowire.Fixed64Type:
			off += 8
		case protowire.BytesType:
			l, n := protowire.ConsumeVarint(w.src.window(off, reg.end, 10))
			if n < 0 {
				return refuse("malformed length at byte %d", off)
			}
			off += int64(n)
			if l > uint64(reg.end-off) {
				return refuse("field %d at byte %d runs past its message", num, off)
			}
			f.body = region{off, off + int64(l)}
			off += int64(l)
		default:
			return refuse("protobuf groups (field %d) are not ONNX", num)
		}
		if off > reg.end {
			return refuse("field %d at byte %d runs past its message", num, off)
		}
		if err := fn(num, f); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) deeper(depth int) error {
	if w.lim.MaxDepth > 0 && depth > w.lim.MaxDepth {
		return refuse("graphs or types nested deeper than %d", w.lim.MaxDepth)
	}
	return nil
}

func (w *walker) graph(reg region, depth int) error {
	if err := w.deeper(depth); err != nil {
		return err
	}
	return w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 1: // node
			return w.need(f, func(b region) error { return w.node(b, depth) })
		case 5: // initializer
			return w.need(f, func(b region) error { return w.tensor(b) })
		case 15: // sparse_initializer
			return w.need(f, func(b region) error { return w.sparse(b) })
		case 11, 12, 13: // input, output, value_info
			return w.need(f, func(b region) error { return w.valueInfo(b, depth) })
		}
		return nil
	})
}

func (w *walker) node(reg region, depth int) error {
	return w.message(reg, func(num protowire.Number, f field) error {
		if num == 5 { // attribute
			return w.need(f, func(b region) error { return w.attribute(b, depth) })
		}
		return nil
	})
}

func (w *walker) attribute(reg region, depth int) error {
	var sawT, sawG, sawS, sawTP bool
	return w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 5: // t
			if err := f.once(&sawT, "attribute t"); err != nil {
				return err
			}
			return w.tensor(f.body)
		case 10: // tensors
			return w.need(f, func(b region) error { return w.tensor(b) })
		case 6: // g
			if err := f.once(&sawG, "attribute g"); err != nil {
				return err
			}
			return w.graph(f.body, depth+1)
		case 11: // graphs
			return w.need(f, func(b region) error { return w.graph(b, depth+1) })
		case 22: // sparse_tensor
			if err := f.once(&sawS, "attribute sparse_tensor"); err != nil {
				return err
			}
			return w.sparse(f.body)
		case 23: // sparse_tensors
			return w.need(f, func(b region) error { return w.sparse(b) })
		case 14: // tp
			if err := f.once(&sawTP, "attribute tp"); err != nil {
				return err
			}
			return w.typeProto(f.body, depth+1)
		case 15: // type_protos
			return w.need(f, func(b region) error { return w.typeProto(b, depth+1) })
		}
		return nil
	})
}

func (w *walker) function(reg region, depth int) error {
	return w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 7: // node
			return w.need(f, func(b region) error { return w.node(b, depth+1) })
		case 11: // attribute_proto
			return w.need(f, func(b region) error { return w.attribute(b, depth+1) })
		case 12: // value_info
			return w.need(f, func(b region) error { return w.valueInfo(b, depth+1) })
		}
		return nil
	})
}

func (w *walker) trainingInfo(reg region, depth int) error {
	var sawInit, sawAlg bool
	return w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 1: // initialization
			if err := f.once(&sawInit, "training initialization"); err != nil {
				return err
			}
			return w.graph(f.body, depth+1)
		case 2: // algorithm
			if err := f.once(&sawAlg, "training algorithm"); err != nil {
				return err
			}
			return w.graph(f.body, depth+1)
		}
		return nil
	})
}

func (w *walker) sparse(reg region) error {
	var sawV, sawI bool
	var dims []int64
	err := w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 1: // values
			if err := f.once(&sawV, "sparse values"); err != nil {
				return err
			}
			return w.tensor(f.body)
		case 2: // indices
			if err := f.once(&sawI, "sparse indices"); err != nil {
				return err
			}
			return w.tensor(f.body)
		case 3: // dims
			return w.dims(f, &dims)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = w.elements(dims)
	return err
}

func (w *walker) valueInfo(reg region, depth int) error {
	var sawType bool
	return w.message(reg, func(num protowire.Number, f field) error {
		if num == 2 { // type
			if err := f.once(&sawType, "value_info type"); err != nil {
				return err
			}
			return w.typeProto(f.body, depth+1)
		}
		return nil
	})
}

// typeProto checks declared shapes: tensor_type(1), sequence_type(4),
// map_type(5), sparse_tensor_type(8), optional_type(9).
func (w *walker) typeProto(reg region, depth int) error {
	if err := w.deeper(depth); err != nil {
		return err
	}
	return w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 1, 8:
			return w.need(f, func(b region) error {
				return w.message(b, func(num protowire.Number, f field) error {
					if num == 2 { // shape
						return w.need(f, w.shape)
					}
					return nil
				})
			})
		case 4, 5, 9:
			return w.need(f, func(b region) error {
				return w.message(b, func(num protowire.Number, f field) error {
					if num == 1 && f.typ == protowire.BytesType || num == 2 { // elem_type, value_type
						return w.need(f, func(b region) error { return w.typeProto(b, depth+1) })
					}
					return nil
				})
			})
		}
		return nil
	})
}

// shape checks a TensorShapeProto: every dim_value in [0, MaxDim].
func (w *walker) shape(reg region) error {
	rank := 0
	return w.message(reg, func(num protowire.Number, f field) error {
		if num != 1 {
			return nil
		}
		rank++
		if w.lim.MaxRank > 0 && rank > w.lim.MaxRank {
			return refuse("a shape of more than %d dimensions", w.lim.MaxRank)
		}
		return w.need(f, func(b region) error {
			return w.message(b, func(num protowire.Number, f field) error {
				if num == 1 && f.typ == protowire.VarintType {
					return w.dim(int64(f.v))
				}
				return nil
			})
		})
	})
}

func (w *walker) dim(d int64) error {
	if d < 0 {
		return refuse("negative dimension %d", d)
	}
	if w.lim.MaxDim > 0 && d > w.lim.MaxDim {
		return refuse("dimension %d is larger than %d", d, w.lim.MaxDim)
	}
	return nil
}

// dims appends the values of a repeated int64 field, packed or not.
func (w *walker) dims(f field, out *[]int64) error {
	add := func(v uint64) error {
		if err := w.dim(int64(v)); err != nil {
			return err
		}
		*out = append(*out, int64(v))
		if w.lim.MaxRank > 0 && len(*out) > w.lim.MaxRank {
			return refuse("a tensor of more than %d dimensions", w.lim.MaxRank)
		}
		return nil
	}
	switch f.typ {
	case protowire.VarintType:
		return add(f.v)
	case protowire.BytesType:
		if f.body.len() > int64(10*max(w.lim.MaxRank, 1)) && w.lim.MaxRank > 0 {
			return refuse("a tensor of more than %d dimensions", w.lim.MaxRank)
		}
		b := w.src.window(f.body.off, f.body.end, int(min(f.body.len(), 1<<16)))
		if int64(len(b)) != f.body.len() {
			return refuse("packed dims too long")
		}
		b = append([]byte(nil), b...) // the window may move under the next read
		for len(b) > 0 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return refuse("malformed packed dims")
			}
			b = b[n:]
			if err := add(v); err != nil {
				return err
			}
		}
		return nil
	}
	return refuse("dims of wire type %d", f.typ)
}

// elements multiplies dims, refusing an overflow.
func (w *walker) elements(dims []int64) (uint64, error) {
	n := uint64(1)
	for _, d := range dims {
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, refuse("tensor of shape %v has more elements than any file can hold", dims)
		}
		n = lo
	}
	return n, nil
}

// elementBits is the storage size of ONNX TensorProto.DataType values; 0 for
// strings and unknown types, whose size the check does not bound.
func elementBits(dt uint64) uint64 {
	switch dt {
	case 2, 3, 9, 17, 18, 19, 20, 24: // uint8 int8 bool float8*
		return 8
	case 4, 5, 10, 16: // uint16 int16 float16 bfloat16
		return 16
	case 1, 6, 12: // float int32 uint32
		return 32
	case 7, 11, 13, 14: // int64 double uint64 complex64
		return 64
	case 15: // complex128
		return 128
	case 21, 22, 23: // uint4 int4 float4e2m1
		return 4
	case 25, 26: // uint2 int2
		return 2
	}
	return 0
}

// tensor checks a TensorProto: dims, its declared size against the bytes it
// has, and external data.
func (w *walker) tensor(reg region) error {
	var (
		dims                  []int64
		dataType, location    uint64
		sawType, sawLoc       bool
		rawLen                int64 = -1
		typedLen              int64
		extLoc, extOff, extLn string
		sawExtLoc             bool
		entries               int
	)
	w.rep.Tensors++
	err := w.message(reg, func(num protowire.Number, f field) error {
		switch num {
		case 1:
			return w.dims(f, &dims)
		case 2:
			if f.typ != protowire.VarintType || sawType {
				return refuse("tensor data_type malformed or repeated")
			}
			sawType, dataType = true, f.v
		case 9: // raw_data
			if f.typ != protowire.BytesType || rawLen >= 0 {
				return refuse("tensor raw_data malformed or repeated")
			}
			rawLen = f.body.len()
		case 4, 5, 7, 10, 11: // float, int32, int64, double, uint64 data
			if f.typ == protowire.BytesType {
				typedLen += f.body.len()
			} else {
				typedLen += 8
			}
		case 13: // external_data
			entries++
			return w.need(f, func(b region) error {
				k, v, err := w.entry(b)
				if err != nil {
					return err
				}
				switch k {
				case "location":
					if sawExtLoc {
						return refuse("external data names two locations")
					}
					sawExtLoc, extLoc = true, v
				case "offset":
					extOff = v
				case "length":
					extLn = v
				}
				return nil
			})
		case 14: // data_location
			if f.typ != protowire.VarintType || sawLoc {
				return refuse("tensor data_location malformed or repeated")
			}
			sawLoc, location = true, f.v
		}
		return nil
	})
	if err != nil {
		return err
	}
	n, err := w.elements(dims)
	if err != nil {
		return err
	}
	hi, lo := bits.Mul64(n, elementBits(dataType))
	if hi != 0 || lo/8 > math.MaxInt64 {
		return refuse("tensor of shape %v declares more bytes than any file can hold", dims)
	}
	declared := int64((lo + 7) / 8)
	switch {
	case location == 1 || entries > 0 || sawExtLoc:
		if location != 1 {
			return refuse("tensor has external_data entries but is not marked EXTERNAL")
		}
		if rawLen >= 0 || typedLen > 0 {
			return refuse("an EXTERNAL tensor also carries data of its own")
		}
		if !sawExtLoc {
			return refuse("an EXTERNAL tensor without a location")
		}
		avail, err := w.external(extLoc, extOff, extLn)
		if err != nil {
			return err
		}
		if declared > avail {
			return refuse("tensor of shape %v declares %d bytes; its external data holds %d", dims, declared, avail)
		}
		w.rep.ExternalTensors++
	case rawLen >= 0:
		if declared > rawLen {
			return refuse("tensor of shape %v declares %d bytes; its raw_data holds %d", dims, declared, rawLen)
		}
	default:
		if declared > w.fileSize {
			return refuse("tensor of shape %v declares %d bytes, more than the %d-byte model", dims, declared, w.fileSize)
		}
	}
	return nil
}

// entry reads a StringStringEntryProto (key 1, value 2), bounded by MaxLocation.
func (w *walker) entry(reg region) (k, v string, err error) {
	err = w.message(reg, func(num protowire.Number, f field) error {
		if num != 1 && num != 2 {
			return nil
		}
		if f.typ != protowire.BytesType {
			return refuse("external data entry of wire type %d", f.typ)
		}
		if f.body.len() > int64(max(w.lim.MaxLocation, 1)) {
			return refuse("external data entry longer than %d bytes", w.lim.MaxLocation)
		}
		s := string(w.src.window(f.body.off, f.body.end, int(f.body.len())))
		if num == 1 {
			k = s
		} else {
			v = s
		}
		return nil
	})
	return k, v, err
}

// external checks one external data reference and returns the bytes it spans.
func (w *walker) external(loc, offS, lenS string) (int64, error) {
	if w.ext == nil {
		return 0, refuse("external data (%q) is not allowed here", loc)
	}
	size, ok := w.extSizes[loc]
	if !ok {
		if w.lim.MaxExternalFiles > 0 && len(w.extSizes) >= w.lim.MaxExternalFiles {
			return 0, refuse("more than %d external data files", w.lim.MaxExternalFiles)
		}
		s, err := w.ext(loc)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				err = refuse("external data %q: %v", loc, err)
			}
			return 0, err
		}
		size = s
		w.extSizes[loc] = size
		w.rep.ExternalFiles = append(w.rep.ExternalFiles, loc)
	}
	num := func(s, what string) (int64, error) {
		if s == "" {
			return -1, nil
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || s[0] == '+' {
			return 0, refuse("external data %s %q is not a non-negative integer", what, s)
		}
		return v, nil
	}
	off, err := num(offS, "offset")
	if err != nil {
		return 0, err
	}
	off = max(off, 0)
	ln, err := num(lenS, "length")
	if err != nil {
		return 0, err
	}
	if off > size {
		return 0, refuse("external data offset %d is past the end of %q (%d bytes)", off, loc, size)
	}
	if ln < 0 {
		return size - off, nil
	}
	if ln > size-off {
		return 0, refuse("external data %q: offset %d + length %d is past its end (%d bytes)", loc, off, ln, size)
	}
	return ln, nil
}

// source reads a file through a small window, so the walk's memory does not
// grow with the model.
type source struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	boff int64
}

const windowSize = 64 << 10

// window returns up to n bytes at off, never past end; fewer at the end of
// the file or on a read error (the protobuf decoder then refuses).
func (s *source) window(off, end int64, n int) []byte {
	if n > windowSize {
		n = windowSize
	}
	end = min(end, s.size, off+int64(n))
	if off >= end {
		return nil
	}
	if off < s.boff || end > s.boff+int64(len(s.buf)) {
		if cap(s.buf) < windowSize {
			s.buf = make([]byte, windowSize)
		}
		s.buf = s.buf[:windowSize]
		m, err := s.r.ReadAt(s.buf, off)
		if m < 0 || (err != nil && !errors.Is(err, io.EOF)) {
			m = 0
		}
		s.buf, s.boff = s.buf[:m], off
		if off+int64(m) < end {
			end = off + int64(m)
		}
		if off >= end {
			return nil
		}
	}
	return s.buf[off-s.boff : end-s.boff]
}
