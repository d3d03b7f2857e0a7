"""Helpers for process functions: packaging fixture folders and deploying them."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import e2e_support as s

PROCESS_FIXTURES = s.REPO_ROOT / "tests" / "fixtures" / "process"


def host_python_runtime() -> str:
    name = os.path.basename(os.path.realpath("/usr/bin/python3"))
    return name.replace("python", "python", 1)


def host_node_runtime() -> str:
    import subprocess

    version = subprocess.run(["/usr/bin/node", "--version"], capture_output=True, text=True).stdout
    return f"nodejs{version.strip().lstrip('v').split('.')[0]}.x"


def zip_dir(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """Zips a folder, keeping the executable bits (bootstrap must stay executable)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            info = zipfile.ZipInfo(str(path.relative_to(folder)))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def deploy(client, fixture: str, runtime: str, handler: str, **extra) -> str:
    name = s.unique_name(fixture)
    params = {
        "FunctionName": name,
        "Runtime": runtime,
        "Role": s.ROLE,
        "Handler": handler,
        "Code": {"ZipFile": zip_dir(PROCESS_FIXTURES / fixture)},
    }
    params.update(extra)
    client.create_function(**params)
    return name


def queue_and_sender_role(iam, sqs) -> tuple[str, str, str, str]:
    """A new queue and a role Lambda may assume that may only send to it:
    (queue name, queue URL, role name, role ARN)."""
    queue = s.unique_name("inbox")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    role = s.unique_name("sender")
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="send", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage",
                       "Resource": f"arn:aws:sqs:{s.REGION}:000000000000:{queue}"}]}))
    return queue, queue_url, role, role_arn
