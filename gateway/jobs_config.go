package gateway

import (
	"fmt"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/jobqueue"
)

// JobsConfig tunes the asynchronous jobs (jobs.go, jobs_worker.go); Config
// embeds it, each field a flag. Zero values take the defaults below.
type JobsConfig struct {
	NoJobWorker       bool          `description:"serve the job routes but work no batch nor webhook in this gateway (the other gateways do)"`
	JobWorkers        int           `description:"job batches this gateway has in flight at once (default 2): jobs take spare capacity only"`
	JobPauseInflight  int           `description:"interactive requests in flight in this gateway at or above which it claims no job batch (default 4)"`
	JobBatch          int           `description:"texts per job batch, one call of the model each (default 32, at most --maxtexts)"`
	JobLease          time.Duration `description:"how long a gateway holds a claimed job batch; a gateway that dies holding one leaves it to another after that (default 2×--timeout + 10s)"`
	JobMaxAttempts    int           `description:"claims of a job batch that fails retryably before its texts are tried one by one and the failing ones dead-lettered (default 3)"`
	JobMaxBytes       int64         `description:"largest job upload in bytes, JSON or JSONL (413 beyond; default 64 MiB)"`
	JobMaxTextBytes   int           `description:"largest text of a job in bytes (413 beyond; default 64 KiB)"`
	JobUploadTimeout  time.Duration `description:"deadline to receive and store a whole job upload (408 beyond; default 2m)"`
	JobUploads        int           `description:"job uploads this gateway receives at once, each holding one of the Postgres pool's connections (503 overloaded beyond; default 2)"`
	JobWebhookPrivate bool          `description:"let webhooks reach private, loopback and link-local addresses (refused by default, checked at each connection)"`
	JobWebhookTimeout time.Duration `description:"deadline of one webhook delivery (default 10s)"`
	JobWebhookRetries int           `description:"deliveries of a job's webhook before it is given up (default 8, backoff from 2s doubling to 10m)"`
}

// jobsSettings fills the defaults of c for a gateway of settings s.
func (c JobsConfig) settle(s settings) (JobsConfig, error) {
	orDefault(&c.JobWorkers, 2)
	orDefault(&c.JobPauseInflight, 4)
	orDefault(&c.JobBatch, 32)
	orDefault(&c.JobLease, 2*s.Timeout+10*time.Second)
	orDefault(&c.JobMaxAttempts, 3)
	orDefault(&c.JobMaxBytes, 64<<20)
	orDefault(&c.JobMaxTextBytes, 64<<10)
	orDefault(&c.JobUploadTimeout, 2*time.Minute)
	orDefault(&c.JobUploads, 2)
	orDefault(&c.JobWebhookTimeout, 10*time.Second)
	orDefault(&c.JobWebhookRetries, 8)
	if c.JobBatch > s.MaxTexts {
		c.JobBatch = s.MaxTexts
	}
	if c.JobMaxTextBytes > jobqueue.MaxTextBytes {
		return c, fmt.Errorf("--jobmaxtextbytes=%d: at most %d", c.JobMaxTextBytes, jobqueue.MaxTextBytes)
	}
	return c, nil
}
