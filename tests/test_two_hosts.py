"""Data-parallel training across two hosts that talk over TCP, built from two network namespaces.

Each "host" is a network namespace (ip netns) holding one end of a veth pair, with its own
address (10.199.0.1 and 10.199.0.2); nothing else is reachable from either. mpiexec runs on
the first host with a hostfile of the two addresses, `-localhost` naming the address the
second host's proxy calls back to, and as its ssh a script that runs the command in the
namespace of the host it is given (docs/distributed.md, "Two hosts over TCP", has the recipe
for real machines). Both namespaces share this machine's kernel, so UCX, MPICH's transport,
would connect the ranks through shared memory as if they were one host; UCX_TLS=tcp,self
leaves it only TCP, as between two machines, and the bytes counted on the veth prove it.

The run must give the losses and weights of one process (the bar of the 2-rank test in
tests/test_distributed.py). Needs root, ip(8) and MPI (pip install -e '.[mpi]'); skipped
with the reason otherwise. The namespaces are deleted even when the test fails.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.test_distributed import ENV, MPIEXEC, ROOT, TINY, evaluations, needs_mpi, weights

ADDRESSES = ("10.199.0.1", "10.199.0.2")
LAUNCHER = """#!/bin/sh
# mpiexec's ssh: launch.sh [ssh options] HOST COMMAND... runs COMMAND in HOST's network namespace
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
case $host in
  %s) exec ip netns exec %s sh -c "$*" ;;
  %s) exec ip netns exec %s sh -c "$*" ;;
esac
echo "launch.sh: unknown host $host" >&2; exit 1
"""


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@pytest.fixture
def two_hosts(tmp_path):
    """{namespace: (veth, address)} for two namespaces joined by a veth pair; deleted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and ip(8) (apt-get install iproute2)")
    hosts = {f"ngpt{os.getpid()}{s}": (f"ngpt{os.getpid()}v{s}", address) for s, address in zip("ab", ADDRESSES)}
    (ns_a, (veth_a, _)), (ns_b, (veth_b, _)) = hosts.items()
    try:
        steps = [("netns", "add", ns_a), ("netns", "add", ns_b),
                 ("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)]
        for ns, (veth, address) in hosts.items():
            steps += [("link", "set", veth, "netns", ns), ("-n", ns, "addr", "add", f"{address}/24", "dev", veth),
                      ("-n", ns, "link", "set", veth, "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            result = ip(*step)
            if result.returncode:
                pytest.skip(f"cannot build two network namespaces here: ip {' '.join(step)}: {result.stderr.strip()}")
        yield hosts
    finally:
        for ns in hosts:
            ip("netns", "delete", ns)  # deletes its end of the veth pair, and with it the other
    assert not any(ns in ip("netns", "list").stdout for ns in hosts)


def tx_bytes(ns, veth):
    """Bytes sent so far through `veth` in namespace `ns`."""
    return json.loads(ip("-n", ns, "-s", "-j", "link", "show", veth).stdout)[0]["stats64"]["tx"]["bytes"]


@needs_mpi
def test_two_hosts_over_tcp_match_one_process(tmp_path, two_hosts):
    text_file = tmp_path / "input.txt"
    text_file.write_text("".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(150)))
    (ns_a, _), (ns_b, _) = two_hosts.items()
    launcher, hostfile = tmp_path / "launch.sh", tmp_path / "hosts"
    launcher.write_text(LAUNCHER % (ADDRESSES[0], ns_a, ADDRESSES[1], ns_b))
    launcher.chmod(0o755)
    hostfile.write_text("\n".join(ADDRESSES) + "\n")
    iters = 30
    args = TINY + [f"--data_file={text_file}", f"--max_iters={iters}", f"--lr_decay_iters={iters}",
                   "--eval_interval=10", "--dropout=0"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train = [sys.executable, os.path.join(ROOT, "train.py"), *args]
    result = subprocess.run([*train, f"--out_dir={one}"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    sent = {ns: tx_bytes(ns, veth) for ns, (veth, _) in two_hosts.items()}
    mpiexec = ["ip", "netns", "exec", ns_a, MPIEXEC, "-f", str(hostfile), "-n", "2", "-ppn", "1",
               "-launcher", "ssh", "-launcher-exec", str(launcher), "-localhost", ADDRESSES[0]]
    result = subprocess.run([*mpiexec, *train, f"--out_dir={two}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**ENV, "UCX_TLS": "tcp,self"})
    assert result.returncode == 0, result.stderr
    a, b = evaluations(one), evaluations(two)
    assert sorted(a) == sorted(b) == list(range(0, iters + 1, 10))
    for it in a:
        np.testing.assert_allclose(b[it], a[it], rtol=1e-4, err_msg=f"evaluation at iteration {it}")
    wa, wb = weights(one), weights(two)
    assert max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa) <= 1e-5
    gradient_bytes = sum(w.nbytes for w in wa.values())
    for ns, (veth, _) in two_hosts.items():  # each host sent at least its gradients at every step
        assert tx_bytes(ns, veth) - sent[ns] >= iters * gradient_bytes, ns
