package apikey

import "strings"

// FromAuthorization returns the credential of an Authorization header value
// "Token <credential>" or "Bearer <credential>" (the scheme in any case, as
// RFC 9110 has it), or "" for any other value. The gateway's API keys, the
// backoffice's tokens and internal/bearer's tokens are read with it.
func FromAuthorization(h string) string {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !(strings.EqualFold(scheme, "Token") || strings.EqualFold(scheme, "Bearer")) {
		return ""
	}
	return strings.TrimSpace(cred)
}
