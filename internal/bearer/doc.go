// Package bearer is a static bearer token between two parts of the stack,
// both sides of it: the Authorization value a caller sends (Header) and the
// check a server makes (Valid, Require: constant time, 401 in the house
// error shape with WWW-Authenticate). The runtimes require their model's
// call credential with it (internal/artifactcred, sent by the gateway), and
// the scheduler its read token on /sd and /plan (sent by Prometheus and the
// apiserver). It knows no role, route or secret file.
package bearer
