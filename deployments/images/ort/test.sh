#!/usr/bin/env bash
# Runs the ORT parity test inside the nlpswarm-ort image (built first,
# cached): the test binary is built with the image's tag and run with the
# image's libraries, as the runtime is, against the shared fixtures.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ORT_IMAGE=${ORT_IMAGE:-nlpswarm-ort:dev}
GO=${GO:-go}
FIXTURES=${NLPSWARM_FIXTURES:-$(cd .. && pwd)/shared/fixtures/nlp}
[ -d "$FIXTURES" ] || { echo "[ort-test] fixtures absent at $FIXTURES" >&2; exit 1; }
ORT_IMAGE=$ORT_IMAGE ./deployments/images/ort/build.sh
mkdir -p bin
# -trimpath as build.sh's binary: the two share the compiled packages
CGO_ENABLED=1 $GO test -c -trimpath -tags ORT -o bin/models-ort.test ./models
# the test finds fixtures at ../../shared/fixtures/nlp from its package
# folder; NLPSWARM_MINILM_DIR (make minilm) is mounted for the benchmarks
extra=()
if [ -n "${NLPSWARM_MINILM_DIR:-}" ]; then
  extra=(-v "$NLPSWARM_MINILM_DIR:/t/minilm:ro" -e NLPSWARM_MINILM_DIR=/t/minilm)
fi
# the benchmarks' knobs (NLPSWARM_BENCH_SECONDS, NLPSWARM_BENCH_ENGINE) go in too
for v in $(compgen -e | grep '^NLPSWARM_BENCH_' || true); do
  extra+=(-e "$v")
done
# Debian's libonnx prints "Schema error" lines at load (schemas registered
# twice, harmless): they are filtered out
# shellcheck disable=SC2086 # ORT_TEST_ARGS is a list of flags
docker run --rm --network none -e NLPSWARM_ORT_REQUIRED=1 "${extra[@]}" \
  -v "$PWD/bin/models-ort.test:/t/repo/models/models.test:ro" \
  -v "$FIXTURES:/t/shared/fixtures/nlp:ro" -w /t/repo/models \
  --entrypoint /t/repo/models/models.test "$ORT_IMAGE" \
  -test.run "${ORT_TEST_RUN:-^(TestParityORT|TestEngineLoadsInSandboxORT)\$}" -test.v -test.count=1 ${ORT_TEST_ARGS:-} 2>&1 | grep -v '^Schema error\|^$'
