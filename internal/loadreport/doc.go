// Package loadreport is the Redis contract between the gateways and the
// scheduler's autoscaler, so that both sides read and write one format:
//
//   - load figures: every gateway replica writes, every second, one hash
//     <prefix>load:gw:<gateway id> (field: model, value: JSON Figures) with a
//     TTL of a few periods, and its id with the time into the sorted set
//     <prefix>load:gateways. A dead gateway's figures expire with its key.
//     Read sums the live gateways' figures per model.
//   - wake-ups: a gateway holding requests for a model at zero pushes the
//     model's name on the list <prefix>load:wake (once per hold, deduplicated
//     in the gateway); the autoscaler blocks on it (WaitWake) and scales the
//     model from zero at once. The scheduler's handling is idempotent (a
//     guarded 0 → n write), so a repeated wake-up changes nothing.
//
// It holds no policy: what the figures mean for replicas is scheduler/autoscale.
package loadreport
