// Package jobs works the asynchronous jobs of issue 20 (their records and
// queue are internal/jobqueue's): Worker claims due batches, calls the
// model through a Caller and completes each batch once (or releases it for
// a retry with Backoff), and Webhooks delivers each job's end to its
// webhook, signed with the account's secret, retried with WebhookBackoff.
//
// Where it runs: inside the gateway role (gateway/jobs_worker.go gives the
// Caller: the gateway's own forward to the model's replicas, with the
// balancer, the call credentials, retries on another replica and the hold
// of a model at zero). A separate role would have to repeat all of that, or
// go through a gateway's customer API as a customer and be counted and
// limited as one. Every gateway replica works the queue; a gateway killed
// mid-batch leaves its batch to its lease, after which any gateway claims
// it again (jobqueue: Postgres rows under FOR UPDATE SKIP LOCKED), and the
// completion that was cut off writes nothing.
//
// Priority: jobs take the replicas' spare capacity only. Each gateway has
// at most Config.Workers batches in flight, and claims none while its
// interactive requests in flight are at or above a threshold (Config.Busy):
// an interactive request then waits at most behind the batches already in
// flight.
//
// Retries (Decide): a batch whose call fails retryably (no replica, 5xx,
// timeout, busy) is released and claimed again after Backoff, up to
// Config.MaxAttempts claims; a batch the model refuses (4xx), or whose
// attempts are spent, is tried text by text, and each text that still
// fails is dead-lettered with its error (the job's errors list) without
// failing the job.
//
// Webhooks: customer input, so hostile. CheckWebhookURL refuses at
// acceptance what can never be delivered; WebhookClient checks each
// connection's address as it is dialled, after resolution (so a DNS
// rebinding to a private address is refused as well), unless the operator
// allows private addresses (--jobwebhookprivate; the tests use loopback
// through it); no proxy, no redirect followed, a deadline on each delivery
// and at most 4 KiB of the answer read. The signature (header
// customerapi.SignatureHeader) is HMAC-SHA256 of "<unix time>.<body>"
// under the account's secret, which the customer reads and rotates with
// their key (GET /v1/jobs/webhook-secret, POST .../rotate).
package jobs
