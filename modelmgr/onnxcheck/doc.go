// Package onnxcheck owns the safety check of a model folder before any engine
// reads it: the sizes of its JSON files, and model.onnx, whose protobuf it
// walks with a bounded reader (never unmarshalling the whole model, so memory
// stays small whatever the file declares). It refuses external data that is
// not a plain relative file inside the model's folder (no "..", no absolute
// path, no symlink, offset and length inside the file), negative or absurd
// dimensions, and tensors that declare more bytes than their data holds. It
// is a leaf that both modelmgr (at upload) and models (again at load) import;
// it imports neither, runs no model and writes nothing.
package onnxcheck
