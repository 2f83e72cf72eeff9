// Package modelmgr owns the model registry: receiving uploaded archives
// (streamed, hashed while streaming, size-limited, refused when the store's
// disk is short of space), validating them (the onnxcheck walk, capped JSON,
// and a smoke inference, run in a child process under memory, CPU-time and
// wall-time limits without the server's environment, confined by Landlock
// (internal/sandbox) to its archive, its work folder and the engine's
// libraries, or reporting in the version's metadata why it could not be:
// Isolation and ServeChild), the content-addressed blob store (its temp folder emptied at
// start), and the models / model_versions rows. Blobs are removed only by
// the garbage collector (blobgc.go): unreferenced, past a grace period, and
// never on a database error. It does not serve HTTP
// (apiserver does), does not run models (it calls a smoke test it is given)
// and never talks to Docker.
package modelmgr
