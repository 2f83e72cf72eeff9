//go:build !agentonly

package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/sandbox"
	"github.com/nlpswarm/nlpswarm/modelmgr"
	"github.com/nlpswarm/nlpswarm/models"
)

// uploadValidator wires the safe archive extractor and the runtime's smoke
// inference into the model manager's validation, run in a child process
// (`nlpswarm validate-artifact`) under memory, CPU-time and wall-time limits
// and without the server's secrets: a hostile model crashes or starves the
// child, never the apiserver.
func uploadValidator(smokeTimeout time.Duration) modelmgr.Validator {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	lim := modelmgr.DefaultChildLimits
	// the wall limit covers extraction and checks as well as the smoke inference
	lim.Wall = max(lim.Wall, smokeTimeout+5*time.Minute)
	return modelmgr.Validator{Extract: modelmgr.Extract, Smoke: models.SmokeTest, SmokeTimeout: smokeTimeout,
		Isolation: &modelmgr.Isolation{Command: []string{exe, "validate-artifact"}, Limits: lim}}
}

// probeValidationSandbox says at start whether the validation child will be
// able to confine itself with Landlock in this container (the child's own
// Status is stored with every version): logged, a warning when it cannot,
// and exported as nlpswarm_apiserver_validation_sandbox_abi (0: uploads are
// validated without a sandbox).
func probeValidationSandbox(reg prometheus.Registerer, log *slog.Logger) {
	st := sandbox.Probe()
	if st.Enforced() {
		log.Info("upload validation sandbox", "sandbox", st.String())
	} else {
		log.Warn("upload validation runs without a sandbox: the validation child can read what this server's user can", "why", st.Unavailable)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nlpswarm_apiserver_validation_sandbox_abi",
		Help: "Landlock ABI version the upload validation child confines itself with (probed at start); 0: none, validation runs without a sandbox.",
	}, func() float64 { return float64(st.ABI) }))
}
