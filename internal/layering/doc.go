// Package layering holds no code, only the test that keeps the import
// layers: roles (apiserver, scheduler, gateway, models, modelmgr and the
// packages under them) → contracts and plumbing (internal/*), never back up;
// and the role pairs that must stay apart (the apiserver reaches Swarm only
// through the deployment record, never by importing the scheduler; the
// scheduler reads the runtime's cold-start record from internal/coldstart,
// not from models). It also checks that every fuzz target of the module is
// in the Makefile's FUZZ_TARGETS, so CI runs each one.
package layering
