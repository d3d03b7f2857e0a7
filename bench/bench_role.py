"""The execution role the benchmarks' functions run with: CreateFunction needs a role that
Lambda may assume, so each benchmark makes this one on its node first."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Callable, Optional

NAME = "bench"
ARN = f"arn:aws:iam::000000000000:role/{NAME}"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})

Signer = Callable[[str, str, str, dict], dict]


def ensure(port: int, sign: Optional[Signer] = None, service_signer: Optional[Signer] = None) -> str:
    """Creates the role on the node at 127.0.0.1:PORT unless it exists; returns its ARN.
    SIGN, if given, signs the request (for a node with authentication on)."""
    body = urllib.parse.urlencode({"Action": "CreateRole", "Version": "2010-05-08",
                                   "RoleName": NAME, "AssumeRolePolicyDocument": TRUST})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if sign is not None:
        headers = sign("POST", f"http://127.0.0.1:{port}/", body, headers)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/", body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if r.status != 200 and b"EntityAlreadyExists" not in data:
        raise RuntimeError(f"creating the bench role: {r.status} {data[:300]!r}")
    return ARN
