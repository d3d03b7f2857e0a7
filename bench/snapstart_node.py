#!/usr/bin/env python3
"""SnapStart for Node.js: cold starts of a published SnapStart version (restored from its
template) against the same code published without SnapStart (a normal init), in alternating
rounds on one node; the method and the output are `snapstart_python.py`'s.

- hello: a handler with nothing to initialise; sdk: a handler that loads the AWS SDK for
  JavaScript v3's S3 and SQS clients (the ones nimbus gives Node functions) and makes a client
  of each at init.
- burst and memory: the sdk function.
- the peers on the same machine: `node -e 0` and `node -e "require('@aws-sdk/client-s3');
  require('@aws-sdk/client-sqs')"`.

usage: bench/snapstart_node.py NIMBUS_BIN [COLD_STARTS_PER_ROUND] [ROUNDS]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import snapstart_python  # noqa: E402


def node_runtime() -> str:
    import subprocess
    major = subprocess.run(["/usr/bin/node", "--version"], capture_output=True, text=True,
                           check=True).stdout.strip().lstrip("v").split(".")[0]
    return f"nodejs{major}.x"


HELLO = b'''
exports.handler = async (event) => {
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep * 1000));
  return { ok: true };
};
'''
SDK = b'''
const { S3Client } = require('@aws-sdk/client-s3');
const { SQSClient } = require('@aws-sdk/client-sqs');
const s3 = new S3Client({});
const sqs = new SQSClient({});
exports.handler = async (event) => {
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep * 1000));
  return { ok: true, s3: typeof s3.send, sqs: typeof sqs.send };
};
'''

if __name__ == "__main__":
    runtime = node_runtime()
    snapstart_python.main(
        kinds=[("hello", (runtime, "index.handler", "index.js", HELLO)),
               ("sdk", (runtime, "index.handler", "index.js", SDK))],
        peers=[("node -e 0", ["/usr/bin/node", "-e", "0"]),
               ("node -e \"require('@aws-sdk/client-s3'); require('@aws-sdk/client-sqs')\"",
                ["/usr/bin/node", "-e", "require('@aws-sdk/client-s3'); require('@aws-sdk/client-sqs')"])])
