// Package ggufcheck owns the check of a GGUF model file (the generative
// models of issue 15) before any engine reads it: it parses the header with
// github.com/gpustack/gguf-parser-go (metadata and tensor infos only, never
// the weights; large metadata arrays such as the vocabulary are skipped by
// seeking, their lengths kept), refuses what llama.cpp could not load or what
// would lie about its size, and summarises what the backoffice records: the
// architecture, context length, parameter count, quantisation, tensor bytes,
// whether a chat template is present, and the memory a replica needs for its
// weights plus the KV cache of context × parallel slots (Info.MemoryBytes).
//
// Hostile input: every tensor's data must lie inside the file and on the
// file's alignment, counts and lengths are bounded (Limits), a panic inside
// the parser becomes an error, and the parser itself bounds every declared
// length by the bytes left in the file. Memory is bounded further by the
// process: the backoffice runs this inside its validation child, under the
// child's address-space limit (modelmgr.Limits).
//
// It is a leaf: it imports no other package of this module, runs no model and
// writes nothing.
package ggufcheck
