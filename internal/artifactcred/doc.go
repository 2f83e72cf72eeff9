// Package artifactcred is the contract between the scheduler, which mints
// a model service's artifact credential, and the apiserver, which checks it
// on /internal/blobs/{digest} (issue 17, finding 1): a credential names one
// digest and an expiry and carries HMAC-SHA256(key, "v1|digest|expiry"), so
// a runtime can download its own model and nobody else's, and only until
// the expiry. The key (Key) is derived from the internal token, a secret
// that only the scheduler and the apiserver are given; runtimes no longer
// get it.
//
// The wire form is "v1.<digest>.<unix expiry>.<hex MAC>", sent as the
// bearer token. Mint, Parse and Verify are pure (the clock is a parameter).
//
// # Expiry and restarts
//
// The credential is part of the model service's spec (a runtime argument),
// and the scheduler rolls a service whenever its spec changes, so the expiry
// must not move on every reconcile. Expiry picks it from a fixed grid: the
// next boundary of a Period-long window after now, plus one Period, with the
// grid offset per digest (so the services of a cluster do not all roll in
// the same hour). The credential therefore stays the same for one Period
// and is always valid for at least one more Period when minted: the
// scheduler re-mints it, and Swarm rolls the service (start-first), once a
// Period (7 days); within a window every reconcile builds the same spec.
//
// A replica that restarts reuses the artifact already unpacked in the
// node-local cache volume without downloading; one placed on a new node
// downloads with the credential in its spec, which is valid for at least
// one more Period at any time the scheduler is running. If the scheduler is
// down for longer than a Period, a replica started on a node without the
// artifact cannot download it (401) and is restarted by Swarm until the
// scheduler returns and re-mints: a bounded outage of new placements, the
// price of a credential that does not last forever.
package artifactcred
