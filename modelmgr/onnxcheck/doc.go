// Package onnxcheck owns the safety check of an uploaded ONNX model before any
// engine parses it: it walks the protobuf with a bounded reader (never
// unmarshalling the whole model, so memory stays small whatever the file
// declares), refuses external data that is not a plain relative file inside
// the model's folder (no "..", no absolute path, no symlink, offset and length
// inside the file), negative or absurd dimensions, and tensors that declare
// more bytes than their data holds. It is a leaf that both modelmgr (at
// upload) and models (again at load) import; it imports neither, runs no
// model and writes nothing.
package onnxcheck
