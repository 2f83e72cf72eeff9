// Package modelmgr owns the model registry: receiving uploaded archives
// (streamed, hashed while streaming, size-limited), validating them, the
// content-addressed blob store, and the models / model_versions rows. It does
// not serve HTTP (apiserver does), does not run models (it calls a smoke test
// it is given) and never talks to Docker.
package modelmgr
