// Package apiserver owns the backoffice HTTP API under /api/v1 (gin): admin
// authentication, models and their versions (through modelmgr), desired
// deployments (it writes desired state and NOTIFYs the scheduler; it never
// talks to Docker), accounts, plans, API keys, usage and node inventory, and
// the internal artifact endpoint runtimes download from.
package apiserver
