// Package runtimeapi is the wire contract between the model runtime
// (models/, the server) and the gateway (gateway/, its client): the routes a
// runtime serves, the /predict request and answer, the output of each task,
// and what each status of a runtime's answer means to its caller. Both sides
// import it, so the format is written once.
//
// It holds types, constants and pure functions only: no HTTP server or
// client, no model loading, and it imports no package of this module, so
// that any role (and a new runtime kind) can use it without pulling in
// another role.
package runtimeapi
