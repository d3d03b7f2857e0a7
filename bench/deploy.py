#!/usr/bin/env python3
"""Deploying applications from templates: `nimbus deploy` of the SAM hello-world application
(tests/fixtures/apps/sam-hello: packaging with its requirements, the change set, seven
resources) from nothing on a fresh node, a second deploy with no change, then a stack of 50
functions each with an HTTP API route (about 250 resources), and its no-change redeploy.
Wall time of the CLI, in rounds that each start a fresh node.

The peer, in the same rounds: moto's CloudFormation (moto_server, one Python process) creating
the same 50-function stack from the template `nimbus deploy` produced after the SAM transform
(the resources CloudFormation would make, functions with inline code), with boto3's CreateStack
(the template is over the 51,200 bytes the aws CLI sends inline), polled until complete. moto
records the resources without running anything.

usage: bench/deploy.py NIMBUS_BIN [ROUNDS]
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(binary: str, data: Path, config: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"node did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[1]


def timed(cmd: list[str], env: dict, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def many_functions(count: int) -> str:
    lines = ["Transform: AWS::Serverless-2016-10-31", "Resources:"]
    for i in range(count):
        lines += [f"  F{i}:", "    Type: AWS::Serverless::Function", "    Properties:", "      Runtime: python3.11",
                  "      Handler: index.handler", "      InlineCode: |", "        def handler(event, context):",
                  f"            return {i}", "      Events:", "        Web:", "          Type: HttpApi",
                  "          Properties:", f"            Path: /f{i}", "            Method: get"]
    return "\n".join(lines) + "\n"


def greeting_wheel(directory: Path) -> None:
    with zipfile.ZipFile(directory / "greeting-1.0-py3-none-any.whl", "w") as z:
        z.writestr("greeting/__init__.py", "def text():\n    return 'hello world'\n")
        z.writestr("greeting-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n")
        z.writestr("greeting-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("greeting-1.0.dist-info/RECORD", "")


def processed_for_moto(binary: str, env: dict, stack: str) -> str:
    """The 50-function stack's template after the SAM transform, as the node shows it."""
    out = subprocess.run(["aws", "--endpoint-url", env["NIMBUS_ENDPOINT"], "cloudformation", "get-template",
                          "--stack-name", stack, "--template-stage", "Processed"],
                         env=env, capture_output=True, text=True, check=True)
    template = json.loads(json.loads(out.stdout)["TemplateBody"]) if isinstance(json.loads(out.stdout)["TemplateBody"], str) else json.loads(out.stdout)["TemplateBody"]
    return json.dumps(template)


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    python_minor = f"python3.{sys.version_info.minor}"
    results: dict[str, list[float]] = {k: [] for k in ["hello", "hello-again", "fifty", "fifty-again", "moto-fifty"]}
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            config = tmp / "nimbus.toml"
            config.write_text(f'[worker]\nruntime_aliases = {{ "python3.13" = "{python_minor}" }}\n')
            proc, endpoint = start_node(binary, tmp / "data", config)
            env = {**os.environ, "NIMBUS_ENDPOINT": endpoint, "NIMBUS_DATA_DIR": str(tmp / "data"),
                   "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "data" / "admin.credentials"), "AWS_DEFAULT_REGION": "us-east-1"}
            try:
                app = tmp / "sam-hello"
                shutil.copytree(REPO / "tests" / "fixtures" / "apps" / "sam-hello", app)
                greeting_wheel(app)
                results["hello"].append(timed([binary, "deploy", "-f", str(app / "template.yaml")], env))
                results["hello-again"].append(timed([binary, "deploy", "-f", str(app / "template.yaml")], env))
                many = tmp / "many"
                many.mkdir()
                (many / "template.yaml").write_text(many_functions(50))
                results["fifty"].append(timed([binary, "deploy", "-f", str(many / "template.yaml")], env))
                results["fifty-again"].append(timed([binary, "deploy", "-f", str(many / "template.yaml")], env))
                processed = processed_for_moto(binary, env, "many-dev")
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            # The peer, same round.
            port = free_port()
            moto = subprocess.Popen(["moto_server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                template = json.loads(processed)
                for res in template["Resources"].values():
                    if res["Type"] == "AWS::Lambda::Function":
                        res["Properties"]["Code"] = {"ZipFile": "def handler(event, context):\n    return 0\n"}
                import boto3
                cf = boto3.client("cloudformation", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                                  aws_access_key_id="test", aws_secret_access_key="test")
                started = time.perf_counter()
                cf.create_stack(StackName="many", TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"])
                while cf.describe_stacks(StackName="many")["Stacks"][0]["StackStatus"].endswith("_IN_PROGRESS"):
                    time.sleep(0.05)
                status = cf.describe_stacks(StackName="many")["Stacks"][0]["StackStatus"]
                results["moto-fifty"].append(time.perf_counter() - started)
                if status != "CREATE_COMPLETE":
                    raise SystemExit(f"moto: {status}")
            finally:
                moto.terminate()
                moto.wait(timeout=30)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()), flush=True)
    print(f"medians of {rounds} rounds:")
    for k, v in results.items():
        print(f"  {k}: {statistics.median(v):.2f} s")


if __name__ == "__main__":
    main()
