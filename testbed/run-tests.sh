#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs and starts the emulators, runs every test
# (unit tests and the integration tests against the emulators), and stops the emulators.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
testbed/testbed.sh start
trap 'testbed/testbed.sh stop' EXIT
# shellcheck disable=SC1091
source .testbed/env
# The alert rules: valid, and their unit tests pass.
promtool check rules deploy/prometheus/sluice-rules.yaml
promtool test rules deploy/prometheus/sluice-rules.test.yaml
# The integration tests wait on I/O, not CPU: let them run side by side.
cargo test --all-targets -- --test-threads "${SLUICE_TEST_THREADS:-8}"
# The deploy kit, offline: manifests against the Kubernetes schemas, ECS JSON against the API's shapes.
deploy/validate.sh
