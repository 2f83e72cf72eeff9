// Package artifactcred holds the credentials the scheduler derives for a
// model service from a secret it shares with the service's counterpart:
// the artifact credential and the call credential (below).
//
// The artifact credential is the contract between the scheduler, which
// mints it, and the apiserver, which checks it
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
//
// # The call credential
//
// The package also holds the other credential the scheduler writes into a
// model service (issue 17: a runtime's /predict answered anyone on the
// runtimes' overlay): the call credential (call.go), which the model's
// runtime requires as bearer token on its inference and metadata routes
// (internal/bearer) and which the gateway sends on every upstream request.
// It uses the same mechanism (a key derived per kind of credential from a
// Docker secret, HMAC-SHA256 over "|"-joined fields) from another secret,
// replica_call_secret, held by the scheduler and the gateways only. It names
// the model and has no expiry: the gateway derives it alone for every model
// it calls, and the runtime only compares it with the one in its arguments,
// so neither the gateway nor the runtime needs the scheduler's clock.
// Rotating the secret rolls every model service (their spec changes) while
// the gateways restart with the new one; until both are done, a gateway and
// a replica on different secrets answer 502 (the gateway never relays the
// runtime's 401 as the customer's).
package artifactcred
