"""mitmproxy addon in front of kinesis-local: AWS-shaped read faults, chosen per test.

A test points sluice's Kinesis endpoint at `http://<proxy>/fault-<name>`; the proxy strips the
prefix and reads `$SLUICE_FAULTS_DIR/<name>.json` on each request, e.g.
`{"GetRecords": {"throttle": 3, "expire": 2}}`: the first 3 GetRecords calls of that test get
ProvisionedThroughputExceededException, the next 2 ExpiredIteratorException, the rest pass through.
"""
import json
import os
import re
import uuid

from mitmproxy import http

FAULTS_DIR = os.environ.get("SLUICE_FAULTS_DIR", "/tmp")
PREFIX = re.compile(r"^/fault-([A-Za-z0-9_-]+)(/.*)?$")
seen = {}


def error(flow: http.HTTPFlow, kind: str, message: str) -> None:
    flow.response = http.Response.make(
        400,
        json.dumps({"__type": kind, "message": message}),
        {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": kind, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def request(flow: http.HTTPFlow) -> None:
    m = PREFIX.match(flow.request.path)
    if not m:
        return
    name = m.group(1)
    flow.request.path = m.group(2) or "/"
    operation = flow.request.headers.get("X-Amz-Target", "").split(".")[-1]
    try:
        with open(os.path.join(FAULTS_DIR, f"{name}.json")) as f:
            rules = json.load(f).get(operation, {})
    except (OSError, ValueError):
        return
    key = (name, operation)
    count = seen.get(key, 0) + 1
    seen[key] = count
    throttle = int(rules.get("throttle", 0))
    expire = int(rules.get("expire", 0))
    if count <= throttle:
        error(flow, "ProvisionedThroughputExceededException", "Rate exceeded for shard")
    elif count <= throttle + expire:
        error(flow, "ExpiredIteratorException", "Iterator expired")
