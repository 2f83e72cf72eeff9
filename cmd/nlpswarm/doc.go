// Command nlpswarm is the one binary of the platform: every role of the stack
// (apiserver, scheduler, gateway, runtime, agent, migrate) and the ops CLI.
// Each role or verb lives in its own file and registers itself; this package
// only wires configuration, logging and signals to the domain packages and
// holds no domain logic of its own.
//
// agent is the one role built with cgo (NVML): the stack runs it from its
// own image (deployments/images/agent), whose binary is built with the tag
// agentonly, which leaves out the files of every other role and verb (each
// carries `//go:build !agentonly`): the same main, config and server code,
// half the packages to compile. `agent --print` reads the GPUs once and
// prints what the agent would report, without a database.
//
// migrate is a one-shot role: in the stack it applies the schema as its
// owner and exits. The apiserver, scheduler and gateway wait at start
// (--schemawait) until the schema is at least their binary's.
package main
