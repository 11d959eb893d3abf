#!/usr/bin/env bash
# Quick start: emulators up, a demo stream fed with records, sluice running the `recorder`
# function on it. Watch invocations in the log and numbers on http://127.0.0.1:9090/metrics.
# Ctrl-C stops everything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
testbed/testbed.sh start
# shellcheck disable=SC1091
source .testbed/env
export AWS_ENDPOINT_URL_KINESIS=$SLUICE_TEST_KINESIS_ENDPOINT AWS_ENDPOINT_URL_LAMBDA=$SLUICE_TEST_LAMBDA_ENDPOINT
cargo build --quiet --bin sluice --example demo_producer
rm -rf .testbed/demo-checkpoints
target/debug/examples/demo_producer sluice-demo &
producer=$!
trap 'kill $producer 2>/dev/null || true; testbed/testbed.sh stop' EXIT
echo "demo: sluice is starting; metrics at http://127.0.0.1:9090/metrics, status at /status" >&2
SLUICE_LOG=${SLUICE_LOG:-info,sluice=debug} target/debug/sluice run --config config/demo.yaml
