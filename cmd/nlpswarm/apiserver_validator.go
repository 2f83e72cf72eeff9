//go:build !agentonly

package main

import (
	"os"
	"time"

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
