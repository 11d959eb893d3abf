"""mitmproxy addon in front of cargo-lambda, so sluice is tested against what AWS Lambda sends.

- cargo-lambda answers a function error with HTTP 500 and no header; AWS answers 200 with
  `X-Amz-Function-Error: Unhandled`. This rewrites the former into the latter and adds the
  `X-Amz-Executed-Version` and `x-amzn-RequestId` headers AWS sends with every invoke.
- Fault rules per function qualifier (`FunctionName: recorder:<qualifier>`): the file
  `$SLUICE_FAULTS_DIR/<qualifier>.json`, read on each request, may hold `{"throttle": N}`: the first N
  invocations with that qualifier get AWS's 429 TooManyRequestsException; and `{"max_bytes": N}`:
  a payload over N bytes gets AWS's 413 RequestTooLargeException. The qualifier is removed
  before forwarding (cargo-lambda serves functions by bare name).
"""
import json
import os
import re
import uuid
from urllib.parse import unquote

from mitmproxy import http

FAULTS_DIR = os.environ.get("SLUICE_FAULTS_DIR", "/tmp")
PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations")
seen = {}


def request(flow: http.HTTPFlow) -> None:
    m = PATH.match(flow.request.path)
    if not m:
        return
    name = unquote(m.group(1))
    if ":" not in name:
        return
    base, qualifier = name.split(":", 1)
    flow.request.path = flow.request.path.replace(m.group(1), base, 1)
    try:
        with open(os.path.join(FAULTS_DIR, f"{qualifier}.json")) as f:
            rules = json.load(f)
    except (OSError, ValueError):
        return
    max_bytes = rules.get("max_bytes")
    if max_bytes is not None and len(flow.request.content or b"") > int(max_bytes):
        flow.response = http.Response.make(
            413,
            json.dumps({"Type": "User", "message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
                        "__type": "RequestTooLargeException"}),
            {"Content-Type": "application/json", "x-amzn-ErrorType": "RequestTooLargeException",
             "x-amzn-RequestId": str(uuid.uuid4())},
        )
        return
    count = seen.get(qualifier, 0) + 1
    seen[qualifier] = count
    if count <= int(rules.get("throttle", 0)):
        flow.response = http.Response.make(
            429,
            json.dumps({"Type": "User", "message": "Rate Exceeded.", "__type": "TooManyRequestsException"}),
            {"Content-Type": "application/json", "x-amzn-ErrorType": "TooManyRequestsException",
             "x-amzn-RequestId": str(uuid.uuid4())},
        )


def response(flow: http.HTTPFlow) -> None:
    if not PATH.match(flow.request.path) or flow.response is None:
        return
    if flow.response.status_code == 429:
        return
    if flow.response.status_code == 500:
        try:
            body = json.loads(flow.response.content or b"{}")
        except ValueError:
            body = {}
        if "errorType" in body or "errorMessage" in body:
            flow.response.status_code = 200
            flow.response.reason = "OK"
            flow.response.headers["X-Amz-Function-Error"] = "Unhandled"
    if flow.response.status_code == 200:
        flow.response.headers["X-Amz-Executed-Version"] = "$LATEST"
        flow.response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
