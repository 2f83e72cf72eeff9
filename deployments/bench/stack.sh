#!/usr/bin/env bash
# bench-stack (issue 14): requests/s, p50 and p99 through the whole stack
# (gateway → one runtime replica) of the MiniLM-sized encoder (make minilm)
# at a fixed concurrency, the replica on ONNX Runtime and on pure Go,
# alternated round by round, the load average printed with every figure.
#
#   make bench-stack                  # brings the stack up fresh with ORT=1
#   KEEP_STACK=1 make bench-stack     # reuses a stack make up ORT=1 left up
#
#   ROUNDS (2) rounds of ort then go; BENCH_SECONDS (20) each run; CONC (16)
#   connections; BENCH_CPUS the replica's --cpus (default: none set)
#
# The load generator is wrk (Debian's), on the same machine as the stack:
# compare the two engines' rows side by side, not with other machines.
# Takes the Docker engine for minutes: run it under flock
# /tmp/nlpswarm-stack.lock on a shared machine (make bench-stack does).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
DUR=${BENCH_SECONDS:-20}
CONC=${CONC:-16}
GATEWAY=${GATEWAY:-http://127.0.0.1:8080}
MODEL=minilm
log() { printf '[bench-stack %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y -qq wrk >/dev/null; }

make -s minilm
make -s build
if [ "${KEEP_STACK:-0}" != 1 ]; then
  make -s down VOLUMES=1 || true
  docker secret ls -q --filter name=nlpswarm_ | xargs -r docker secret rm >/dev/null
  make -s up ORT=1
fi
export NLPSWARM_SERVER=${NLPSWARM_SERVER:-http://127.0.0.1:8081}
export NLPSWARM_TOKEN=${NLPSWARM_TOKEN:-$(cat .state/admin_token)}
cli=bin/nlpswarm

# a plan that does not limit the load generator, an account and a key
$cli plans create bench --rps 1000000 --burst 1000000 >/dev/null 2>&1 || true
acct=$($cli accounts ls --json | python3 -c 'import json,sys; print(next((a["id"] for a in json.load(sys.stdin)["accounts"] if a["name"]=="bench"), ""))')
if [ -z "$acct" ]; then
  acct=$($cli accounts create bench --plan bench | awk '{print $3}')
fi
NLPSWARM_BENCH_KEY=$($cli keys create "$acct" --name bench 2>/dev/null)
export NLPSWARM_BENCH_KEY
$cli models create $MODEL --task feature-extraction --description "MiniLM-sized random-weight encoder (bench-stack)" >/dev/null 2>&1 || true
if ! $cli models versions $MODEL 2>/dev/null | grep -q sha256; then
  log "pushing bin/minilm ($(du -sh bin/minilm | cut -f1))"
  $cli models push $MODEL bin/minilm >&2
fi

# deploy MODEL on one replica of backend $1 and wait until the gateway's
# metadata names that backend five times in a row (an old replica gone)
deploy() {
  local b=$1 n=0 i
  $cli deploy $MODEL --replicas 1 --memory 1G ${BENCH_CPUS:+--cpus $BENCH_CPUS} --backend "$b" --wait >/dev/null
  for i in $(seq 1 120); do
    if curl -sf -H "Authorization: Token $NLPSWARM_BENCH_KEY" "$GATEWAY/v2/models/$MODEL" | grep -q "\"$b\""; then
      n=$((n + 1))
      [ $n -ge 5 ] && return 0
    else
      n=0
    fi
    sleep 1
  done
  log "the gateway never answered from a $b replica"; return 1
}

run() {
  # --timeout: wrk's default of 2 s drops the Go backend's slow answers from
  # the figures (counted as timeouts instead)
  wrk -t 2 -c "$CONC" -d "$1s" --timeout 60s --latency -s deployments/bench/embed.lua "$GATEWAY/v1/$MODEL/embeddings" | grep '^RESULT'
}

printf '%-6s %-5s %-4s %9s %9s %9s %9s %s\n' round engine conc 'req/s' 'p50 ms' 'p99 ms' 'failed' 'load average (1, 5, 15 min)'
for r in $(seq 1 "$ROUNDS"); do
  for b in ort go; do
    deploy "$b"
    run 3 >/dev/null # warm-up: shapes, connections
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    res=$(run "$DUR")
    eval "$(echo "$res" | sed 's/^RESULT //')"
    # shellcheck disable=SC2154 # set by the eval of wrk's RESULT line
    printf '%-6s %-5s %-4s %9s %9s %9s %9s %s → %s\n' "$r" "$b" "$CONC" "$rps" "$p50_ms" "$p99_ms" "$((non2xx + errors))" "$load" "$(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
