// Package deployments holds what ships the platform: the image build files
// (the static control-plane image, the ONNX Runtime runtime in images/ort,
// the node agent's cgo image in images/agent, each with its own test
// script run by make test), the local third-party images, stack overlays, the Prometheus config with
// its alert rules (prometheus/alerts.yml) and dashboards, and the scripts
// behind make up/down. Its Go tests check the stack file and the alert
// rules; it holds no runtime code.
package deployments
