// Package jobqueue is the contract of asynchronous jobs (issue 20): the
// Postgres tables of migration 00047 (jobs, job_items, job_batches,
// job_webhook_secrets), the typed records read from them and every
// statement that writes them, so that the gateway's routes (which accept,
// show and cancel jobs) and the job workers (jobs/) name the same columns
// and keep the same rules.
//
// The queue is Postgres, not a Redis stream: a job's texts must be stored
// durably anyway (the results are paged from the same rows), and a batch
// row claimed with FOR UPDATE SKIP LOCKED under a lease is a consumer
// group whose pending entries are reclaimed by whoever claims after the
// lease (a worker killed mid-batch: its batch is claimed again when
// not_before passes, as XAUTOCLAIM would after min-idle-time), inside the
// same transactions as the results. Redis loses what it held since its
// last snapshot on a restart; the jobs must not. Claims go round-robin
// across jobs (lowest batch index first; migration 00048's index), so a
// small job is not queued behind the whole of a large one.
//
// Exactly once: a claim gives the batch a fresh claim token; Complete
// writes the batch's results and marks it done only while the batch is
// still pending under that token (one transaction, the batch row locked),
// and each item's result only while the item has none. A worker that lost
// its lease, or a batch delivered twice, writes nothing. Job counters
// (done, failed) move in the same transaction, and the transaction that
// takes done+failed to total ends the job (state succeeded) and, when the
// job has a webhook, makes its delivery due.
//
// States: queued (accepted) → running (first batch claimed) → succeeded
// (every item answered or dead-lettered) | cancelled (by the customer;
// pending batches are cancelled with it and a batch in flight completes
// nothing). Items failed for good carry error_code and error_message: the
// dead-letter list, which never fails the job.
//
// It holds no policy on retries, priorities or HTTP: the worker's
// (jobs/), and the gateway's routes' (gateway/jobs*.go).
package jobqueue
