"""Worker processes (`nimbus worker --join`) for the fleet tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Optional

import e2e_support as s

JOINED_RE = re.compile(
    r"nimbus worker (\S+) joined (\S+) as worker (\d+) \(serving on ([0-9.]+:\d+), (\d+) MB\)"
)


class Worker:
    """One `nimbus worker` process joined to a node."""

    def __init__(
        self,
        binary: Path,
        node: s.Node,
        name: str,
        capacity_mb: int,
        base: Path,
        secret: Optional[str] = None,
        use_secret_file: bool = True,
    ) -> None:
        self.binary, self.node, self.name = binary, node, name
        self.capacity_mb = capacity_mb
        self.base = base
        self.data_dir = base / f"worker-{name}"
        self.secret = secret
        self.use_secret_file = use_secret_file
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None
        self.stdout_lines: list[str] = []
        self.stderr_path = base / f"worker-{name}.stderr"
        self._joined = threading.Event()

    def command(self) -> tuple[list[str], dict]:
        cmd = [
            str(self.binary),
            "worker",
            "--join",
            self.node.endpoint,
            "--name",
            self.name,
            "--capacity-mb",
            str(self.capacity_mb),
            "--data-dir",
            str(self.data_dir),
        ]
        env = s.clean_env({s.HOST_SENTINEL_VAR: s.HOST_SENTINEL_VALUE})
        if self.secret is None and self.use_secret_file:
            cmd += ["--secret-file", str(self.node.data_dir / "cluster.secret")]
        elif self.secret is not None:
            env["NIMBUS_CLUSTER_SECRET"] = self.secret
        return cmd, env

    def spawn(self) -> "Worker":
        cmd, env = self.command()
        self.base.mkdir(parents=True, exist_ok=True)
        self._joined.clear()
        self.stdout_lines = []
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "ab"),
            env=env,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.stdout_lines.append(line)
            m = JOINED_RE.fullmatch(line)
            if m:
                self.address = m.group(4)
                self._joined.set()

    def start(self, timeout: float = 60.0) -> "Worker":
        self.spawn()
        if not self._joined.wait(timeout):
            self.close()
            raise AssertionError(f"worker {self.name} did not join:\n{self.stderr()}")
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def cached_code(self) -> set[str]:
        """Digests of the code packages in the worker's cache."""
        zips = self.data_dir / "code" / "zips"
        if not zips.is_dir():
            return set()
        return {p.name[: -len(".zip")] for p in zips.glob("*.zip")}


def cluster_status(node: s.Node) -> dict:
    with urllib.request.urlopen(f"{node.endpoint}/nimbus/v1/cluster", timeout=10) as r:
        return json.loads(r.read())


def worker_names(node: s.Node) -> list[str]:
    return sorted(w["name"] for w in cluster_status(node)["workers"])


def metrics(node: s.Node) -> dict[str, float]:
    """GET /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"{node.endpoint}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def metric(node: s.Node, key: str) -> float:
    return metrics(node).get(key, 0.0)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Polls PREDICATE until it returns something true (and returns it); fails after TIMEOUT."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
