"""A real Flower deployment on loopback for tests and benchmarks: one SuperLink, n SuperNodes.

:class:`LoopbackCluster` starts ``flower-superlink --insecure`` and ``n`` ``flower-supernode``
processes on 127.0.0.1 (free ports), each in its own session, writes the SuperLink connection
into a private ``FLWR_HOME``, submits apps with ``flwr run`` and, on exit, SIGKILLs every
process group it started (SuperExec and app processes included) and waits until none is left.
Insecure gRPC on loopback only: across machines use TLS and SuperNode authentication
(``protocols/engine-flower.md`` §7).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from securefl.engine.deploy import node_config_arg, write_superlink_connection
from securefl.engine.task import Scalar


def flower_bin() -> Path:
    """The directory of Flower's console scripts (this interpreter's virtualenv, else PATH)."""
    here = Path(sys.executable).parent
    if (here / "flower-superlink").exists():
        return here
    return Path(shutil.which("flower-superlink") or "flower-superlink").parent


BIN = flower_bin()


def flower_available() -> bool:
    return (BIN / "flower-superlink").exists() and (BIN / "flwr").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, deadline: float) -> None:
    """Until something listens on 127.0.0.1:``port`` (``deadline`` on the monotonic clock)."""
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole session (SuperNode/SuperLink, its SuperExec and app processes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until no member of the group is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def app_pids(home: str | Path, marker: str) -> list[int]:
    """Pids of processes whose command line contains ``marker`` (``flwr-serverapp``,
    ``flwr-clientapp``; ``""``: any) and whose environment names this ``FLWR_HOME``."""
    tag = f"FLWR_HOME={home}".encode()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmd and tag in env:
            out.append(int(proc.name))
    return out


def serverapp_pids(home: str | Path) -> list[int]:
    """Pids of ServerApp processes started for the SuperLink of this ``FLWR_HOME``."""
    return app_pids(home, "flwr-serverapp")


class LoopbackCluster:
    """``with LoopbackCluster(dir, n, node_configs) as c: c.submit(app)`` — see the module doc.

    ``node_configs[i]`` is SuperNode i's ``--node-config``; ``env_extra`` is added to every
    process's environment (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` defaults to 0.1 s here).
    Logs: ``superlink.log`` and ``supernode{i}.log`` in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        n_nodes: int,
        node_configs: Sequence[Mapping[str, Scalar]] = (),
        *,
        env_extra: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if n_nodes < 1 or len(node_configs) not in (0, n_nodes):
            raise ValueError("need n_nodes ≥ 1 and one node config per node (or none)")
        self.dir = Path(directory)
        self.home = self.dir / "home"
        self.n_nodes = n_nodes
        self.node_configs = [dict(c) for c in node_configs] or [{} for _ in range(n_nodes)]
        self.env = dict(os.environ, FLWR_HOME=str(self.home))
        self.env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
        self.env.update(env_extra or {})
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.start_timeout = start_timeout
        self.link_port = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: list[subprocess.Popen[bytes]] = []

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> LoopbackCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if not flower_available():
            raise FileNotFoundError(f"Flower binaries not found in {BIN}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.link_port = free_port()
        write_superlink_connection(self.home, f"127.0.0.1:{self.link_port}", insecure=True)
        self.spawn(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.link_port),
                "--disable-runtime-dependency-installation",
            ],
            "superlink.log",
        )
        wait_port(self.link_port, time.monotonic() + self.start_timeout)
        for i, config in enumerate(self.node_configs):
            args = [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.link_port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
            ]
            if config:
                args += ["--node-config", node_config_arg(config)]
            self.nodes.append(self.spawn(args, f"supernode{i}.log"))

    def spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        """Start ``args`` in its own session with the cluster's environment (killed on exit)."""
        with open(self.dir / log, "wb") as fh:
            proc = subprocess.Popen(
                args, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """SIGKILL every process group this cluster started, then any process left that runs
        under its ``FLWR_HOME`` (the SuperLink's SuperExec and ServerApps live in a session of
        their own); idempotent."""
        for proc in self.procs:
            kill_group(proc)
        for _ in range(3):
            left = app_pids(self.home, "")
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    group = os.getpgid(pid)
                    if group == os.getpgrp():  # never our own group: that one process only
                        os.kill(pid, signal.SIGKILL)
                    else:
                        os.killpg(group, signal.SIGKILL)
            time.sleep(0.2)

    # -------------------------------------------------------------- use
    def submit(self, app_dir: str | Path, *, timeout: float = 120.0) -> str:
        """``flwr run app_dir`` against this SuperLink; returns its stdout (raises on failure)."""
        done = subprocess.run(
            [str(BIN / "flwr"), "run", str(app_dir)],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flwr run failed: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i``'s whole process group (a crashed site)."""
        kill_group(self.nodes[i])

    def serverapp_pids(self) -> list[int]:
        return serverapp_pids(self.home)

    def clientapp_pids(self) -> list[int]:
        return app_pids(self.home, "flwr-clientapp")

    def log(self, name: str = "superlink.log", tail: int = 3000) -> str:
        path = self.dir / name
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""
