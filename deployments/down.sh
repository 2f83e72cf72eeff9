#!/usr/bin/env bash
# make down: remove the stack and the model services the scheduler created.
# Volumes (database, blob store, the runtimes' artifact cache) are kept unless VOLUMES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${STACK:-nlp}
log() { printf '[down] %s\n' "$*" >&2; }
docker rm -f "nlpswarm-backoffice-$STACK" >/dev/null 2>&1 || true
# the model services before the stack: they hold its nlpswarm-runtimes
# network; and the scheduler before them, or it would make them again
rm_models() {
  models=$(docker service ls -q --filter label=nlpswarm.managed=true --filter label=nlpswarm.owner=nlpswarm)
  [ -z "$models" ] || docker service rm $models >/dev/null
}
docker service rm "${STACK}_scheduler" >/dev/null 2>&1 || true
for i in $(seq 1 60); do
  [ -z "$(docker ps -q --filter label=com.docker.swarm.service.name=${STACK}_scheduler)" ] && break
  sleep 1
done
rm_models
for i in $(seq 1 60); do
  [ -z "$(docker ps -q --filter label=nlpswarm.model)" ] && break
  sleep 1
done
docker stack rm "$STACK" >/dev/null 2>&1 || true
rm_models
log "waiting for containers to stop"
for i in $(seq 1 60); do
  [ -z "$(docker ps -q --filter label=com.docker.stack.namespace=$STACK)" ] && break
  sleep 1
done
# a network still busy while stack rm ran outlives it: remove it now
for net in nlpswarm-control nlpswarm-runtimes nlpswarm-admin; do
  for i in $(seq 1 30); do
    [ "$(docker network inspect -f '{{index .Labels "com.docker.stack.namespace"}}' "$net" 2>/dev/null)" = "$STACK" ] || break
    docker network rm "$net" >/dev/null 2>&1 && break
    sleep 1
  done
done
if [ "${VOLUMES:-0}" = 1 ]; then
  # a volume is busy until Swarm has removed the stopped containers using it
  # nlpswarm-artifacts: the model services' node-local artifact cache
  for vol in "${STACK}_pgdata" "${STACK}_store" "${STACK}_prometheus" nlpswarm-artifacts; do
    for i in $(seq 1 60); do
      docker volume inspect "$vol" >/dev/null 2>&1 || break
      docker volume rm "$vol" >/dev/null 2>&1 && break
      sleep 1
    done
    if docker volume inspect "$vol" >/dev/null 2>&1; then log "could not remove volume $vol (still in use?)"; exit 1; fi
  done
  log "volumes removed"
fi
log "stack $STACK removed (secrets kept)"
