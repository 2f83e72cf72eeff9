// Package apiserver owns the backoffice HTTP API under /api/v1 (gin): admin
// authentication, models and their versions (through modelmgr), desired
// deployments (it writes desired state and reads observed state through
// internal/deployment, whose NOTIFY wakes the scheduler; it never talks to
// Docker and imports no scheduler code: GET /api/v1/plan relays a
// scheduler's dry run over HTTP), accounts, plans, API keys, usage and node
// inventory, and the internal artifact endpoint runtimes download from
// (/internal/blobs/{digest}, on the ops listener only), which serves a blob
// only to an unexpired internal/artifactcred credential for that digest,
// checked under a key derived from the internal token; the token itself, an
// admin token or an API key is 403 there.
//
// Canary and shadow (issue 20, canary.go): a deployment request with a
// canary object writes the model's canary beside its stable deployment
// (deployment.PutCanary); POST promote and rollback move the rollout
// (deployment.Promote, Rollback); a model's status and the deployments page
// show the canary, its rule and rollout (with the automatic rule's reason)
// and each version's figures over the last minute, read from the gateways'
// internal/versionstats keys in Redis.
//
// It reads, never writes, three things other roles keep: the per-version
// figures above, the gateways' rate
// limit and quota counts in Redis, through internal/limitkeys' key names
// (an account's detail, and the nlpswarm_apikey_quota_used_ratio gauge the
// stack's quota alert reads), and Prometheus's HTTP query API for the
// monitoring pages (monitor.go builds the queries, monitor_chart.go lays out
// the SVG line charts, both pure; fetchMonitor is the effect, bounded in
// time and bytes).
//
// It also serves the backoffice web pages under /ui (web.go, web_pages.go,
// web_chart.go; templates and static files embedded from web/): a login
// with the admin token that yields a signed session cookie, CSRF tokens on
// every form, and pages for models, versions and uploads, deployments,
// nodes and GPUs (per GPU what the platform placed and the memory of the
// processes it did not place, told apart by the pids of its replicas,
// gpuprocs.go; per node without GPUs, why), accounts, plans, keys and usage, and the monitoring pages
// of a model and of the cluster. Handlers of both the API and the
// pages call the same functions (receiveVersion, deploy, setReplicas,
// undeploy, promoteCanary, rollbackCanary, insertAccount, insertKey, revoke, insertPlan, updatePlan,
// setAccountPlan, revokePrefix, accountDetail, query*), so the two cannot
// drift apart.
package apiserver
