//go:build !agentonly

package main

import (
	"context"
	"os"

	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/modelmgr"
	"github.com/nlpswarm/nlpswarm/models"
)

func init() {
	register(command{Name: "validate-artifact", Summary: "validate one uploaded model archive (the apiserver runs it as a limited child process)", Run: runValidateArtifact})
}

// runValidateArtifact serves one validation request from stdin: it sets the
// request's resource limits on itself and confines itself with Landlock to
// the archive, its work folder and the engine's libraries before it opens
// the archive, extracts and checks it and runs the smoke inference, and
// answers a JSON result on stdout (modelmgr.ServeChild). The apiserver
// starts it with an empty environment and no descriptor but stdin, stdout
// and stderr.
func runValidateArtifact(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &config.Error{Msg: "validate-artifact takes no arguments; the apiserver sends the request on stdin"}
	}
	return modelmgr.ServeChild(ctx, os.Stdin, os.Stdout, modelmgr.Validator{Extract: modelmgr.Extract, Smoke: models.SmokeTest, Engine: models.EngineFiles()})
}
