// Package apierror owns the JSON error envelope every HTTP API of nlpswarm
// answers with: {"error": {"code": "...", "message": "..."}}. It knows
// nothing about routes, auth or storage.
package apierror
