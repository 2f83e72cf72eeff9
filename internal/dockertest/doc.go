// Package dockertest gives integration tests the real Docker engine (and its
// swarm) and the project's own image, built once from the working tree. It
// skips where no engine runs, except under CI=true, where it fails. Tests name
// what they create uniquely and remove only that.
package dockertest
