package main

import (
	"time"

	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// uploadValidator wires the safe archive extractor (and, once the runtime
// lands, its smoke inference) into the model manager's validation.
func uploadValidator(smokeTimeout time.Duration) modelmgr.Validator {
	return modelmgr.Validator{Extract: modelmgr.Extract, Smoke: smokeTest, SmokeTimeout: smokeTimeout}
}

// smokeTest is set by the runtime's wiring; nil skips the smoke inference.
var smokeTest modelmgr.SmokeFunc
