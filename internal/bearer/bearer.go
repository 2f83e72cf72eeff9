package bearer

import (
	"crypto/subtle"
	"net/http"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
)

// Code is the error code of a refusal.
const Code = "unauthorized"

// Header is the Authorization value that carries token.
func Header(token string) string { return "Bearer " + token }

// Valid reports whether r carries token as its bearer credential, compared
// in constant time. An empty token is carried by no request.
func Valid(r *http.Request, token string) bool {
	got := apikey.FromAuthorization(r.Header.Get("Authorization"))
	return token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// Require serves h to the requests that carry token (Valid) and answers the
// others 401 with code Code and a message saying what is missing (what: "the
// scheduler read token"; never the token). An empty token lets no request
// through: a server that runs open does not wrap h, and says so in its log.
func Require(token, what string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Valid(r, token) {
			Refuse(w, what)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Refuse answers 401 for a request that lacks the bearer token what names,
// as Require does (for a server whose token can change while it serves).
func Refuse(w http.ResponseWriter, what string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="nlpswarm"`)
	apierror.Write(w, http.StatusUnauthorized, Code, "missing or wrong bearer token: send Authorization: Bearer <"+what+">")
}
