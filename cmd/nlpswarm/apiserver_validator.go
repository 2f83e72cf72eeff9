package main

import (
	"time"

	"github.com/nlpswarm/nlpswarm/modelmgr"
	"github.com/nlpswarm/nlpswarm/models"
)

// uploadValidator wires the safe archive extractor and the runtime's smoke
// inference into the model manager's validation.
func uploadValidator(smokeTimeout time.Duration) modelmgr.Validator {
	return modelmgr.Validator{Extract: modelmgr.Extract, Smoke: models.SmokeTest, SmokeTimeout: smokeTimeout}
}
