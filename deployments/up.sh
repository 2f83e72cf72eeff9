#!/usr/bin/env bash
# make up: build the images, make this engine a swarm manager if it is not,
# label the node, create the network and secrets if missing, deploy the stack
# and wait until every service is healthy. Prints the URLs at the end.
# On another engine (DOCKER_HOST), e.g. the multi-node lab of internal/swarmlab:
#   NLPSWARM_IMAGE, NLPSWARM_IMAGE_ID  an image already loaded on every node (no build)
#   ORT=1                              also build the ONNX Runtime runtime image (make
#                                      ort-image: the first build takes minutes, then
#                                      cached) and make ort the default engine of model
#                                      services; off by default to keep make up fast
#   NLPSWARM_ORT_IMAGE_ID              an ORT runtime image already loaded on every node
#                                      (no build); the default engine is then ort too
#   LLAMA=0                            do not build the generation runtime's CPU image
#                                      (nlpswarm-llama, built by default; text-generation
#                                      deployments are then unplaceable)
#   NLPSWARM_LLAMA_IMAGE_ID            a generation image already loaded on every node (no build)
#   GPU=1                              also build the CUDA generation image
#                                      (nlpswarm-llama-cuda, make llama-cuda-image, about
#                                      1.2 GB) for text-generation deployments on GPUs
#   NLPSWARM_LLAMA_CUDA_IMAGE_ID       a CUDA generation image already loaded on the GPU
#                                      nodes (no build)
#   NLPSWARM_AGENT_IMAGE               the node agent's image, already loaded on every
#                                      machine-learning node (no build; default: make
#                                      agent-image builds nlpswarm-agent:dev)
#   STACK_OVERLAYS                     extra compose files (-c) after docker-compose.yml
#   GATEWAY_REPLICAS                   gateways to run (1), at most one per node (host-mode
#                                      port): one per node behind the balancer in front
#   PUBLIC_HOST                        the address printed in the gateway's URL (127.0.0.1)
#   BACKOFFICE_ADDR                    the address the backoffice forwarder listens on
#                                      (127.0.0.1; e.g. a VPN or management address)
#   PROMETHEUS_ADDR                    the same for Prometheus (127.0.0.1)
# The backoffice and Prometheus are not published by the stack (issue 17):
# a forwarder container (nlpswarm forward) on the nlpswarm-admin network
# publishes them on BACKOFFICE_ADDR / PROMETHEUS_ADDR only. An overlay that
# publishes the backoffice itself (deployments/lab.yml) gets no forwarder.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${STACK:-nlp}
STATE=${STATE:-.state}
WAIT=${WAIT:-300}
# Every line carries the seconds since make up began; each phase's time is
# summed up at the end (issue 21: where a first make up spends its minutes).
log() { printf '[up %4ds] %s\n' "$SECONDS" "$*" >&2; }
PHASE='' PHASE_AT=0 PHASES=()
# phase NAME: NAME starts now; the one before it ends
phase() {
  [ -n "$PHASE" ] && PHASES+=("$PHASE $((SECONDS - PHASE_AT))s")
  PHASE=$1 PHASE_AT=$SECONDS
}

docker info >/dev/null 2>&1 || { log "no Docker engine reachable"; exit 1; }

PUBLIC_HOST=${PUBLIC_HOST:-127.0.0.1}
if [ -n "${NLPSWARM_IMAGE_ID:-}" ]; then
  NLPSWARM_IMAGE=${NLPSWARM_IMAGE:-$NLPSWARM_IMAGE_ID}
  log "using the image $NLPSWARM_IMAGE ($NLPSWARM_IMAGE_ID), no build"
else
  phase "nlpswarm image"
  log "building the nlpswarm image"
  make -s image IMAGE=nlpswarm:dev >/dev/null
  NLPSWARM_IMAGE=nlpswarm:dev
  NLPSWARM_IMAGE_ID=$(docker image inspect -f '{{.Id}}' nlpswarm:dev)
fi
export NLPSWARM_IMAGE NLPSWARM_IMAGE_ID

# engine_image VAR WANT TARGET MAKEVAR TAG PHASE WHAT: an engine's runtime image,
# whose ID the scheduler gets (docker-compose.yml's --ortimage,
# --llamaimage, --llamacudaimage): VAR when set (an image already loaded on
# every node, no build), else built by make TARGET when WANT is 1, else
# empty (the deployments that need it are then unplaceable, or, for ORT,
# run pure Go)
engine_image() {
  local var=$1 want=$2 target=$3 makevar=$4 tag=$5 label=$6 what=$7
  if [ -n "${!var:-}" ]; then
    log "using the $what ${!var}, no build"
  elif [ "$want" = 1 ]; then
    phase "$label"
    log "building the $what (make $target)"
    make -s "$target" "$makevar=$tag" >/dev/null
    printf -v "$var" '%s' "$(docker image inspect -f '{{.Id}}' "$tag")"
  else
    printf -v "$var" '%s' ""
  fi
  export "${var?}"
}
# the ONNX Runtime engine (issue 14): opt-in (the first build takes minutes)
engine_image NLPSWARM_ORT_IMAGE_ID "${ORT:-0}" ort-image ORT_IMAGE nlpswarm-ort:dev "ORT image" "ONNX Runtime runtime image"
# the generation runtime (issue 15): the CPU image always (seconds warm: its
# sid root is cached in /var/cache/nlpswarm/llama-sid), the CUDA one for GPU
# nodes only with GPU=1 (about 1.2 GB)
engine_image NLPSWARM_LLAMA_IMAGE_ID "${LLAMA:-1}" llama-image LLAMA_IMAGE nlpswarm-llama:dev "llama image" "generation runtime's image"
engine_image NLPSWARM_LLAMA_CUDA_IMAGE_ID "${GPU:-0}" llama-cuda-image LLAMA_CUDA_IMAGE nlpswarm-llama-cuda:dev "llama-cuda image" "CUDA generation image"

if [ -z "${POSTGRES_IMAGE:-}${REDIS_IMAGE:-}${PROMETHEUS_IMAGE:-}" ]; then
  phase "base images"
  log "building the Postgres, Redis and Prometheus images (Debian packages; cached after the first run)"
  ./deployments/images/build.sh
fi

# the node agent's image (the cgo build on bookworm's glibc, from the base
# the step above made): seconds when the binary is cached
if [ -n "${NLPSWARM_AGENT_IMAGE:-}" ]; then
  log "using the agent image $NLPSWARM_AGENT_IMAGE, no build"
else
  phase "agent image"
  log "building the node agent's image (make agent-image)"
  make -s agent-image AGENT_IMAGE=nlpswarm-agent:dev >/dev/null
  NLPSWARM_AGENT_IMAGE=nlpswarm-agent:dev
fi
export NLPSWARM_AGENT_IMAGE

phase "swarm and secrets"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != "active" ]; then
  log "initialising a one-node swarm"
  docker swarm init >/dev/null 2>&1 || docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
node=$(docker info --format '{{.Swarm.NodeID}}')
nodes=$(docker node ls -q | wc -l)
if [ "$nodes" -eq 1 ]; then
  # one node plays every part: see DB_PLACEMENT in docker-compose.yml
  docker node update --label-add type=machine-learning --label-add database=true "$node" >/dev/null
  export DB_PLACEMENT=${DB_PLACEMENT:-node.labels.database == true}
  log "labelled this node type=machine-learning, database=true"
fi

# the networks are the stack's own (docker-compose.yml: encrypted, not
# attachable but for the forwarder's)

mkdir -p "$STATE" && chmod 700 "$STATE"
# db_password: the Postgres superuser (the migrate service's only);
# db_password_<role>: one login role per service; redis_password: Redis's
# ops user (the default user is off); redis_password_<role>: one Redis ACL user per role;
# gateway_key_secret: the gateways' MAC key of API key verdicts in Redis;
# replica_call_secret: the key of each model's call credential (the
# scheduler's and the gateways'); scheduler_read_token: the bearer token of
# the scheduler's /plan and /sd (the apiserver's and Prometheus's)
for s in db_password admin_token internal_token db_password_apiserver db_password_scheduler \
  db_password_gateway db_password_agent redis_password redis_password_gateway redis_password_scheduler redis_password_apiserver \
  gateway_key_secret replica_call_secret scheduler_read_token; do
  if docker secret inspect "nlpswarm_$s" >/dev/null 2>&1 && [ ! -s "$STATE/$s" ]; then
    # the value is lost (a fresh clone); secrets cannot be read back, so rotate
    # it if nothing uses it yet
    if docker stack services "$STACK" -q 2>/dev/null | grep -q .; then
      log "secret nlpswarm_$s exists but $STATE/$s is missing; run make down first to rotate it"; exit 1
    fi
    docker secret rm "nlpswarm_$s" >/dev/null
    log "rotating secret nlpswarm_$s (its value was not in $STATE)"
  fi
  if docker secret inspect "nlpswarm_$s" >/dev/null 2>&1 && [ -s "$STATE/$s" ]; then
    # another checkout on this engine made it (its own .state): its value
    # is not the one in $STATE, and every CLI call would get 401. The label
    # holds the SHA-256 of the value (of 32 random bytes: it tells nothing);
    # a secret made before the label existed cannot be checked and is kept.
    have=$(docker secret inspect -f '{{index .Spec.Labels "nlpswarm.sha256"}}' "nlpswarm_$s")
    want=$(sha256sum "$STATE/$s" | cut -d' ' -f1)
    if [ -n "$have" ] && [ "$have" != "$want" ]; then
      if docker stack services "$STACK" -q 2>/dev/null | grep -q .; then
        log "secret nlpswarm_$s does not hold the value in $STATE/$s (made by another checkout?); run make down there or here first"; exit 1
      fi
      docker secret rm "nlpswarm_$s" >/dev/null
      log "replacing secret nlpswarm_$s (it did not hold the value in $STATE/$s)"
    fi
  fi
  if ! docker secret inspect "nlpswarm_$s" >/dev/null 2>&1; then
    [ -s "$STATE/$s" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/$s"
    docker secret create --label nlpswarm.managed=true \
      --label "nlpswarm.sha256=$(sha256sum "$STATE/$s" | cut -d' ' -f1)" "nlpswarm_$s" "$STATE/$s" >/dev/null
    log "created secret nlpswarm_$s (value in $STATE/$s)"
  fi
done
chmod 600 "$STATE"/* 2>/dev/null || true

phase "stack deploy and health"
log "deploying stack $STACK"
compose=(-c docker-compose.yml)
for f in ${STACK_OVERLAYS:-}; do compose+=(-c "$f"); done
docker stack deploy --resolve-image never "${compose[@]}" "$STACK" >/dev/null

# One-shot services (restart_policy on-failure) run and exit 0: their
# replicas read 0/1 once done, which is their success, not a failure.
ONESHOT=${ONESHOT:-migrate}
is_oneshot() { local s; for s in $ONESHOT; do [ "$1" = "${STACK}_$s" ] && return 0; done; return 1; }
# oneshot_done: a task of the service completed and none is still to run
oneshot_done() {
  local tasks
  tasks=$(docker service ps "$1" --format '{{.DesiredState}} {{.CurrentState}}' 2>/dev/null) || return 1
  grep -q ' Complete' <<<"$tasks" || return 1
  ! grep -v ' Complete' <<<"$tasks" | grep -q '^Running'
}

log "waiting for services (up to ${WAIT}s)"
deadline=$((SECONDS + WAIT))
while :; do
  pending=()
  while read -r name replicas; do
    if is_oneshot "$name"; then
      oneshot_done "$name" || pending+=("$name (not completed)")
      continue
    fi
    cur=${replicas%%/*}; want=${replicas##*/}; want=${want%% *}
    [ "$cur" = "$want" ] && [ "$want" != "0" ] || pending+=("$name $replicas")
  done < <(docker stack services "$STACK" --format '{{.Name}} {{.Replicas}}')
  unhealthy=$(docker ps --filter "label=com.docker.stack.namespace=$STACK" --filter health=starting --filter health=unhealthy -q | wc -l)
  if [ ${#pending[@]} -eq 0 ] && [ "$unhealthy" -eq 0 ]; then break; fi
  if [ $SECONDS -ge $deadline ]; then
    log "timed out; not ready: ${pending[*]:-} ($unhealthy containers not healthy)"
    docker stack ps "$STACK" --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' | grep -v Running >&2 || true
    exit 1
  fi
  log "  waiting: ${pending[*]:-healthchecks}"
  sleep 3
done

phase "forwarder"
# the backoffice's and Prometheus's door: loopback (or the chosen address)
# of this node only, never every interface as a Swarm host-mode port would
BACKOFFICE_ADDR=${BACKOFFICE_ADDR:-127.0.0.1}
PROMETHEUS_ADDR=${PROMETHEUS_ADDR:-127.0.0.1}
FORWARDER=nlpswarm-backoffice-$STACK
docker rm -f "$FORWARDER" >/dev/null 2>&1 || true
backoffice_host=$PUBLIC_HOST prometheus_host=$PUBLIC_HOST
if grep -qs 'published: 8081' ${STACK_OVERLAYS:-/dev/null}; then
  log "an overlay publishes the backoffice: no forwarder"
else
  docker run -d --name "$FORWARDER" --restart unless-stopped --network nlpswarm-admin \
    --label nlpswarm.managed=true --label nlpswarm.stack="$STACK" \
    --read-only --cap-drop ALL --security-opt no-new-privileges --user 65534:65534 \
    --memory 64m --pids-limit 64 --log-opt max-size=10m --log-opt max-file=3 \
    -p "$BACKOFFICE_ADDR:8081:8081" -p "$PROMETHEUS_ADDR:9090:9090" \
    "$NLPSWARM_IMAGE" forward --routes=":8081=${STACK}_apiserver:8081,:9090=${STACK}_prometheus:9090" >/dev/null
  backoffice_host=$BACKOFFICE_ADDR prometheus_host=$PROMETHEUS_ADDR
  for i in $(seq 1 60); do
    if (exec 3<>"/dev/tcp/$BACKOFFICE_ADDR/8081" && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && grep -q '200 OK' <&3) 2>/dev/null; then break; fi
    [ "$i" = 60 ] && { log "the backoffice forwarder does not answer on $BACKOFFICE_ADDR:8081"; docker logs "$FORWARDER" >&2; exit 1; }
    sleep 1
  done
fi

phase ""
log "took ${SECONDS}s: $(IFS=,; echo "${PHASES[*]}" | sed 's/,/, /g')"
engine="pure Go (make up ORT=1 adds ONNX Runtime)"
[ -n "$NLPSWARM_ORT_IMAGE_ID" ] && engine="ONNX Runtime (nlpswarm-ort); deploy --backend go for pure Go"
generation="none (make up LLAMA=1 builds nlpswarm-llama)"
[ -n "$NLPSWARM_LLAMA_IMAGE_ID" ] && generation="nlpswarm-llama on CPUs"
[ -n "$NLPSWARM_LLAMA_CUDA_IMAGE_ID" ] && generation="${generation%% (*}, nlpswarm-llama-cuda on GPUs"
[ -z "$NLPSWARM_LLAMA_CUDA_IMAGE_ID" ] && generation="$generation (make up GPU=1 adds the CUDA image)"
cat <<MSG
nlpswarm is up (stack "$STACK").
  engine:      model services default to $engine
  generation:  text-generation models run $generation
  backoffice:  http://$backoffice_host:8081   (admin token: $STATE/admin_token)
  gateway:     http://$PUBLIC_HOST:8080
  prometheus:  http://$prometheus_host:9090
The backoffice and Prometheus listen on $backoffice_host only; from another machine:
     ssh -L 8081:127.0.0.1:8081 -L 9090:127.0.0.1:9090 <this host>
Try: export NLPSWARM_SERVER=http://$backoffice_host:8081 NLPSWARM_TOKEN=\$(cat $STATE/admin_token)
     bin/nlpswarm models ls
MSG
