#!/usr/bin/env python3
"""Sends one push with pywebpush, unmodified, for pushlog's integration tests.

The test runs it with the venv's python (deploy/clients/install.sh python)
and REQUESTS_CA_BUNDLE set to its test CA.

stdin: one JSON job
  {"subscription": {endpoint, keys: {p256dh, auth}},
   "payload": "<standard base64 of the exact bytes to send>",
   "vapid": {"subject", "publicKey", "privateKey"},   (base64url raw keys)
   "encoding": "aes128gcm" | "aesgcm",                (omitted: pywebpush's default)
   "ttl": N,                                          (omitted: pywebpush's default, 0)
   "topic": "...", "urgency": "..."}
stdout: one JSON result {"status": 201, "headers": {...}, "body": "..."}
Exits 1 (with {"error": ...}) when no HTTP answer came at all.
"""

import base64
import json
import sys
import traceback

from pywebpush import WebPushException, webpush


def send(job):
    kwargs = {}
    if job.get("encoding"):
        kwargs["content_encoding"] = job["encoding"]
    if job.get("ttl") is not None:
        kwargs["ttl"] = job["ttl"]
    headers = {}
    if job.get("topic"):
        headers["Topic"] = job["topic"]
    if job.get("urgency"):
        headers["Urgency"] = job["urgency"]
    if headers:
        kwargs["headers"] = headers
    payload = base64.b64decode(job.get("payload") or "")
    try:
        r = webpush(
            subscription_info=job["subscription"],
            data=payload or None,
            vapid_private_key=job["vapid"]["privateKey"],
            vapid_claims={"sub": job["vapid"]["subject"]},
            timeout=30,
            **kwargs,
        )
    except WebPushException as e:
        if e.response is None:
            raise
        r = e.response
    return {"status": r.status_code, "headers": dict(r.headers), "body": r.text}


def main():
    try:
        result = send(json.load(sys.stdin))
    except Exception:  # noqa: BLE001 - reported to the test as is
        json.dump({"error": traceback.format_exc()}, sys.stdout)
        sys.stdout.write("\n")
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
