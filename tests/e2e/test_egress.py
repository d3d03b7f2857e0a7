"""Outbound access from process sandboxes, against servers in a network namespace the test
makes (nothing leaves the machine): a "public" address (203.0.113.1, a documentation range)
and a private one (10.77.0.1) behind it, routed from the host. A function reaches the public
server only when it may (its `nimbus:egress` tag, or the node's default), and never a private
address, the host itself (the node's port included) or another sandbox."""

from __future__ import annotations

import os
import subprocess

import botocore.exceptions
import pytest

import e2e_support as s
import process_support as p

PYTHON = p.host_python_runtime()
PUBLIC, PRIVATE, HOST_SIDE, PORT = "203.0.113.1", "10.77.0.1", "203.0.113.254", 18080


def sh(script: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A namespace with a web server on a public and on a private address."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    tag = os.getpid() % 100000
    ns, outer = f"nimbus-e2e-{tag}", f"tn{tag}"
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_text("hello from outside")
    sh(f"""
        ip netns add {ns}
        ip link add {outer} type veth peer name inner netns {ns}
        ip addr add {HOST_SIDE}/24 dev {outer} && ip link set {outer} up
        ip route add 10.77.0.0/24 via {PUBLIC}
        ip -n {ns} addr add {PUBLIC}/24 dev inner && ip -n {ns} addr add {PRIVATE}/24 dev inner
        ip -n {ns} link set inner up && ip -n {ns} link set lo up
        ip -n {ns} route add default via {HOST_SIDE}
    """)
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, "python3", "-m", "http.server", "--bind", "0.0.0.0",
         str(PORT), "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def listening():
        up = sh(f"ip netns exec {ns} python3 -c \"import socket; "
                f"socket.create_connection(('{PUBLIC}', {PORT}), 1)\"", check=False)
        assert up.returncode == 0, up.stderr

    try:
        s.eventually(listening, timeout=10)
        yield
    finally:
        server.kill()
        server.wait()
        sh(f"ip route del 10.77.0.0/24; ip link del {outer}; ip netns del {ns}", check=False)


def probe(lam, name, node, **extra):
    targets = [[PUBLIC, PORT], [PRIVATE, PORT], [HOST_SIDE, node.port], ["127.0.0.1", node.port]]
    targets += extra.get("targets", [])
    out = s.invoke(lam, name, {"targets": targets, "get": f"http://{PUBLIC}:{PORT}/hello.txt"})
    assert out.function_error is None, out.body
    return out.json()


def test_a_function_goes_out_only_where_and_when_it_may(outside, node, lambda_client):
    lam = lambda_client
    shut = p.deploy(lam, "python-net", PYTHON, "app.handler", Timeout=20)
    out = probe(lam, shut, node)
    # The node's default: no way out at all.
    assert out["get"].startswith("error"), out
    assert out["connect"][f"{PUBLIC}:{PORT}"] != "connected", out
    assert out["address"] is None, out

    opened = p.deploy(lam, "python-net", PYTHON, "app.handler", Timeout=20,
                      Tags={"nimbus:egress": "internet", "team": "net"})
    other = p.deploy(lam, "python-net", PYTHON, "app.handler", Timeout=20,
                     Tags={"nimbus:egress": "internet"})
    neighbour = probe(lam, other, node)["address"]
    assert neighbour and neighbour.startswith("100.96."), neighbour
    out = probe(lam, opened, node, targets=[[neighbour, 7777]])
    assert out["get"] == "hello from outside", out
    assert out["connect"][f"{PUBLIC}:{PORT}"] == "connected", out
    # Never a private address, the host (whichever of its addresses), or another sandbox.
    for blocked in (f"{PRIVATE}:{PORT}", f"{HOST_SIDE}:{node.port}", f"{neighbour}:7777"):
        assert out["connect"][blocked] != "connected", (blocked, out)
    # Its own loopback is its own: the node's port there is the sandbox's door to the APIs.
    assert out["connect"][f"127.0.0.1:{node.port}"] == "connected", out
    assert lam.list_tags(Resource=lam.get_function(FunctionName=opened)["Configuration"]["FunctionArn"])[
        "Tags"] == {"nimbus:egress": "internet", "team": "net"}

    # Taking the tag away gives the function new sandboxes without a way out.
    arn = lam.get_function(FunctionName=opened)["Configuration"]["FunctionArn"]
    lam.untag_resource(Resource=arn, TagKeys=["nimbus:egress"])
    assert lam.get_function(FunctionName=opened)["Tags"] == {"team": "net"}
    out = probe(lam, opened, node)
    assert out["get"].startswith("error") and out["address"] is None, out
    lam.tag_resource(Resource=arn, Tags={"nimbus:egress": "internet"})
    assert probe(lam, opened, node)["get"] == "hello from outside"

    # A tag value nimbus does not know is refused, and nothing changes.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.tag_resource(Resource=arn, Tags={"nimbus:egress": "sometimes"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert lam.list_tags(Resource=arn)["Tags"]["nimbus:egress"] == "internet"


def test_the_nodes_default_and_a_function_that_opts_out(outside, node_factory, tmp_path):
    config = tmp_path / "nimbus.toml"
    config.write_text('[sandboxes]\negress = "internet"\n')
    node = node_factory(config=config, name="egress")
    lam = s.lambda_client(node.endpoint)
    by_default = p.deploy(lam, "python-net", PYTHON, "app.handler", Timeout=20)
    assert probe(lam, by_default, node)["get"] == "hello from outside"
    opted_out = p.deploy(lam, "python-net", PYTHON, "app.handler", Timeout=20,
                         Tags={"nimbus:egress": "none"})
    assert probe(lam, opted_out, node)["get"].startswith("error")
