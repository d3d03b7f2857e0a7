#!/usr/bin/env python3
"""Deploys the wasm echo function as `echo` on a node: deploy_echo.py PORT ECHO_WASM."""

import base64
import http.client
import io
import json
import sys
import zipfile

import sys as _sys
_sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402

port, wasm = int(sys.argv[1]), open(sys.argv[2], "rb").read()
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("echo.wasm", wasm)
conn = http.client.HTTPConnection("127.0.0.1", port)
conn.request(
    "POST",
    "/2015-03-31/functions",
    json.dumps(
        {
            "FunctionName": "echo",
            "Runtime": "wasm32-wasip1",
            "Handler": "echo.wasm",
            "Role": bench_role.ensure(port),
            "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()},
        }
    ),
)
reply = conn.getresponse()
assert reply.status == 201, reply.read()
