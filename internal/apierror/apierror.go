package apierror

import (
	"encoding/json"
	"net/http"
)

// StatusClientClosed is the status recorded for a request abandoned
// because its client closed the connection (nginx's 499, not a standard
// status): the gateway's metrics, usage and logs, the backoffice's answer.
const StatusClientClosed = 499

// Body is the JSON envelope of an error answer.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the machine-readable code and the human message of an error.
// Details carries optional structured data (for example validation reasons).
type Detail struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details,omitempty"`
}

// Write sends status with the error envelope. It never includes anything but
// what the caller passes, so callers must keep secrets out of message.
func Write(w http.ResponseWriter, status int, code, message string, details ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Body{Error: Detail{Code: code, Message: message, Details: details}})
}

// New builds the envelope, for frameworks that encode it themselves (gin's c.JSON).
func New(code, message string, details ...string) Body {
	return Body{Error: Detail{Code: code, Message: message, Details: details}}
}
