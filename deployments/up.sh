#!/usr/bin/env bash
# make up: build the images, make this engine a swarm manager if it is not,
# label the node, create the network and secrets if missing, deploy the stack
# and wait until every service is healthy. Prints the URLs at the end.
# On another engine (DOCKER_HOST), e.g. the multi-node lab of internal/swarmlab:
#   NLPSWARM_IMAGE, NLPSWARM_IMAGE_ID  an image already loaded on every node (no build)
#   STACK_OVERLAYS                     extra compose files (-c) after docker-compose.yml
#   PUBLIC_HOST                        the address printed in the URLs (127.0.0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${STACK:-nlp}
STATE=${STATE:-.state}
WAIT=${WAIT:-300}
log() { printf '[up] %s\n' "$*" >&2; }

docker info >/dev/null 2>&1 || { log "no Docker engine reachable"; exit 1; }

PUBLIC_HOST=${PUBLIC_HOST:-127.0.0.1}
if [ -n "${NLPSWARM_IMAGE_ID:-}" ]; then
  NLPSWARM_IMAGE=${NLPSWARM_IMAGE:-$NLPSWARM_IMAGE_ID}
  log "using the image $NLPSWARM_IMAGE ($NLPSWARM_IMAGE_ID), no build"
else
  log "building the nlpswarm image"
  make -s image IMAGE=nlpswarm:dev >/dev/null
  NLPSWARM_IMAGE=nlpswarm:dev
  NLPSWARM_IMAGE_ID=$(docker image inspect -f '{{.Id}}' nlpswarm:dev)
fi
export NLPSWARM_IMAGE NLPSWARM_IMAGE_ID

if [ -z "${POSTGRES_IMAGE:-}${REDIS_IMAGE:-}${PROMETHEUS_IMAGE:-}" ]; then
  ./deployments/images/build.sh
fi

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

docker network inspect nlpswarm >/dev/null 2>&1 ||
  docker network create --driver overlay --attachable --label nlpswarm.managed=true nlpswarm >/dev/null

mkdir -p "$STATE" && chmod 700 "$STATE"
for s in db_password admin_token internal_token; do
  if docker secret inspect "nlpswarm_$s" >/dev/null 2>&1 && [ ! -s "$STATE/$s" ]; then
    # the value is lost (a fresh clone); secrets cannot be read back, so rotate
    # it if nothing uses it yet
    if docker stack services "$STACK" -q 2>/dev/null | grep -q .; then
      log "secret nlpswarm_$s exists but $STATE/$s is missing; run make down first to rotate it"; exit 1
    fi
    docker secret rm "nlpswarm_$s" >/dev/null
    log "rotating secret nlpswarm_$s (its value was not in $STATE)"
  fi
  if ! docker secret inspect "nlpswarm_$s" >/dev/null 2>&1; then
    [ -s "$STATE/$s" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/$s"
    docker secret create --label nlpswarm.managed=true "nlpswarm_$s" "$STATE/$s" >/dev/null
    log "created secret nlpswarm_$s (value in $STATE/$s)"
  fi
done
chmod 600 "$STATE"/* 2>/dev/null || true

log "deploying stack $STACK"
compose=(-c docker-compose.yml)
for f in ${STACK_OVERLAYS:-}; do compose+=(-c "$f"); done
docker stack deploy --resolve-image never "${compose[@]}" "$STACK" >/dev/null

log "waiting for services (up to ${WAIT}s)"
deadline=$((SECONDS + WAIT))
while :; do
  pending=()
  while read -r name replicas; do
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
  printf '[up]   waiting: %s\n' "${pending[*]:-healthchecks}" >&2
  sleep 3
done

cat <<MSG
nlpswarm is up (stack "$STACK").
  backoffice:  http://$PUBLIC_HOST:8081   (admin token: $STATE/admin_token)
  gateway:     http://$PUBLIC_HOST:8080
  prometheus:  http://$PUBLIC_HOST:9090
Try: export NLPSWARM_SERVER=http://$PUBLIC_HOST:8081 NLPSWARM_TOKEN=\$(cat $STATE/admin_token)
     bin/nlpswarm models ls
MSG
