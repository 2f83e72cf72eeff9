// Package archive owns safe extraction of model archives (.tar.gz and .zip):
// it refuses path traversal, absolute paths, links and devices, and bounds
// the total size, the entry count and the compression ratio against bombs;
// a zip's entry count is read from its end record, and archive/zip's walk of
// the central directory is bounded, before any per-entry allocation.
// It is a leaf: both modelmgr (validation) and models (the runtime unpacking
// its artifact) import it, and it imports neither.
package archive
