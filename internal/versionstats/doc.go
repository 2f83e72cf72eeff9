// Package versionstats is the Redis contract of a model's per-version
// figures while two versions run at once (issue 20, canary and shadow):
// the gateways write them, the scheduler's automatic-rollback rule and the
// apiserver's status and deployments page read them, so that all name the
// same keys and read them the same way.
//
// Layout: one hash per model and UTC second,
//
//	<prefix>vstats:<model>:<unix second>
//
// whose fields count what the gateways saw in that second, per version:
//
//	<version>:n     requests answered (by that version's replicas, or
//	                failed trying them)
//	<version>:e     of which errors: a 5xx answer or no answer (transport
//	                failure, timeout); a 4xx is the customer's, not an error
//	<version>:b<i>  of which took a latency in bucket i of Bounds (the time
//	                the version took to answer: the upstream call, retries
//	                included; i = len(Bounds) is the overflow bucket)
//	<version>:c     shadow comparisons made (the version's shadow answer
//	                against the customer's answer)
//	<version>:a     of which agreed (same top label; the same entities,
//	                type and span; embeddings at cosine >= 0.99); counted
//	                per output, one per text of the request
//
// A shadow copy's figures go under "<version>s" instead of "<version>"
// (e.g. "7s:n"), so that a version's live and shadow traffic never mix.
// Every gateway adds its counts of the second it flushes (HINCRBY, at most
// once a second, one pipeline), so several gateways add up; each key
// expires KeyTTL after its last write. Only fields that are not zero are
// written. Read sums the complete seconds of a window (the current second
// is left out: a gateway may not have flushed it yet), at most MaxWindow
// (10 minutes: one HGETALL per second of it). The gateways write figures
// only for models with a routed canary, for both versions.
//
// It holds no policy: what figures roll a canary back is the scheduler's
// (scheduler/canary); what counts as agreement is the gateway's.
//
// Redis access (deployments/images/redis/roles.acl): the gateway user
// HINCRBY and EXPIRE on {prefix}vstats:*, the scheduler and apiserver users
// HGETALL on it.
package versionstats
