package artifactcred

import (
	"encoding/hex"
	"fmt"
)

// MinCallSecret is the shortest replica call secret CallKey takes (make up
// makes 64 characters).
const MinCallSecret = 32

const callVersion = "call.v1"

// CallKey derives the key of the call credentials from the replica call
// secret (the Docker secret replica_call_secret, which only the scheduler
// and the gateways hold). An empty secret gives no key, and Call then gives
// no credential (dev, tests: the runtimes run open); a secret shorter than
// MinCallSecret is refused.
func CallKey(secret string) ([]byte, error) {
	if secret != "" && len(secret) < MinCallSecret {
		return nil, fmt.Errorf("the replica call secret has %d bytes, at least %d", len(secret), MinCallSecret)
	}
	return deriveKey(secret, "nlpswarm replica call credential v1"), nil
}

// Call is the call credential of the runtime of model: what its replicas
// require as bearer token on their inference and metadata routes, and what
// a gateway sends them. It is "call.v1.<hex HMAC-SHA256(key,
// "call.v1|<model>")>": a model's credential opens no other model's
// runtime, and both holders of the secret derive it alone (no expiry, so
// the spec it is written into does not change by itself). "" without a key.
func Call(key []byte, model string) string {
	if len(key) == 0 {
		return ""
	}
	return callVersion + "." + hex.EncodeToString(sign(key, callVersion, model))
}
