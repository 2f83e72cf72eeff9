// Package limitkeys is the Redis contract of an API key's rate limit and
// monthly quota, between the gateways (which count) and the backoffice
// (which shows an account's rate and quota use), so that both name the same
// keys:
//
//   - <prefix>quota:<key id>:<YYYYMM>: the requests counted against key id's
//     monthly quota in that UTC month (an integer, INCRBY'd by every gateway's
//     settlement, expiring 35 days after its last write). Only keys whose plan
//     has a quota are counted.
//   - <prefix>tokens:<key id>:<YYYYMM>: the tokens (input + output, as the
//     generation replicas' usage objects report them) key id spent in that
//     UTC month, INCRBY'd by the gateway that relayed each answer once its
//     usage is known, expiring 35 days after its last write. Only keys whose
//     plan has a monthly token budget are counted.
//   - <prefix>tpm:<key id>:<YYYYMMDDHHMM>: the tokens key id spent in that
//     UTC minute (a fixed window), expiring two minutes after its last
//     write. Only keys whose plan has a per-minute token budget are counted.
//   - <prefix>rl:<key id>: the name the gateways give redis_rate's GCRA for
//     the key; redis_rate stores it under "rate:" + that name as the
//     theoretical arrival time (seconds since 2017-01-01 by Redis's clock).
//     How far that time lies ahead of now, times the plan's rate, is the
//     bucket's backlog: the requests admitted beyond the plan's steady rate
//     that the burst is absorbing.
//
// It holds no policy: what a plan allows and what a request costs is the
// gateway's (gateway/limit.go). The backoffice only reads.
package limitkeys
