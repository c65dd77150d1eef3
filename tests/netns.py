"""Hosts for a test, made of Linux network namespaces on one bridge.

Each host is a network namespace with one veth link to a bridge in a namespace of its
own; addresses exist only on those links, so nothing reaches or leaves this machine's
own network. A host's processes may also get a UTS namespace with the host's name, so a
worker there names itself as another machine would. Everything made is removed by
`close()`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

STOP_SECONDS = 15.0  # for the hosts' processes to stop on SIGTERM before they are killed


class NamespacesUnavailable(Exception):
    """This machine does not let the test make network namespaces (not root, no iproute2)."""


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    link: str  # the bridge's end of its link, in the bridge's namespace
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str], *, hostname: bool = True) -> list[str]:
        """`argv` run on this host: in its network namespace and, with `hostname`, in a
        UTS namespace carrying its name."""
        inside = ["ip", "netns", "exec", self.namespace]
        if not hostname:
            return [*inside, *argv]
        script = f'hostname {self.name} && exec "$@"'
        return [*inside, "unshare", "--uts", "sh", "-c", script, "sh", *argv]

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """A long-running process on this host, in a session of its own; killed by close()."""
        proc = subprocess.Popen(self.argv(argv), start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc


class Lan:
    """A bridge and the hosts linked to it: 10.X.Y.0/24, chosen at random per run."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise NamespacesUnavailable("network namespaces need root and iproute2 (ip)")
        self.tag = f"imp{os.getpid() % 10000}{random.randrange(100)}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
        self.bridge_namespace = f"{self.tag}-lan"
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        try:
            self._namespace(self.bridge_namespace)
        except subprocess.CalledProcessError as e:
            self.close()
            raise NamespacesUnavailable(f"cannot make a network namespace: {e.stderr}") from e
        self._ip("link", "add", "br0", "type", "bridge", namespace=self.bridge_namespace)
        self._ip("link", "set", "br0", "up", namespace=self.bridge_namespace)

    def add(self, name: str) -> Host:
        number = len(self.hosts) + 1
        namespace = f"{self.tag}-{name}"
        link = f"h{number}"
        self._namespace(namespace)
        self._ip(
            "link", "add", "eth0", "type", "veth", "peer", "name", link,
            "netns", self.bridge_namespace, namespace=namespace,
        )  # fmt: skip
        self._ip("link", "set", link, "master", "br0", "up", namespace=self.bridge_namespace)
        address = f"{self.subnet}.{number}"
        self._ip("addr", "add", f"{address}/24", "dev", "eth0", namespace=namespace)
        self._ip("link", "set", "eth0", "up", namespace=namespace)
        self._ip("link", "set", "lo", "up", namespace=namespace)
        host = Host(name, namespace, address, link)
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        """Take the host's link down: it vanishes from the network, its processes run on."""
        self._ip("link", "set", host.link, "down", namespace=self.bridge_namespace)

    def close(self) -> None:
        """Stop every host's processes as an operator would (SIGTERM: `importer gearmand`
        then stops and reaps its gearmand and stunnel), SIGKILL what is left after
        STOP_SECONDS, then remove the namespaces."""
        started = [proc for host in self.hosts for proc in host.processes]
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for host in self.hosts:
            for proc in host.processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
            self._kill_the_rest(host.namespace)
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self._namespaces.clear()

    @staticmethod
    def _kill_the_rest(namespace: str) -> None:
        """Whatever still runs in the namespace: a process that left its parent's group
        (`importer gearmand` starts gearmand in a session of its own) outlives a SIGKILL
        of that group."""
        listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        for pid in listed.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def _namespace(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
        self._namespaces.append(name)

    def _ip(self, *args: str, namespace: str) -> None:
        subprocess.run(["ip", "-n", namespace, *args], check=True, capture_output=True, text=True)
