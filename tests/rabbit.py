"""A private, throw-away RabbitMQ node for the tests (Debian's `rabbitmq-server`).

Everything lives in one directory: HOME (the Erlang cookie), config, data, logs, and a private
`epmd` on its own port, so a test node never meets the machine's own RabbitMQ (if any) nor a
parallel CI job. The real server script is run directly (`/usr/sbin/rabbitmq-server` is a
wrapper that `su`s to the `rabbitmq` user). Processes are ours, killed by process group.

When the package is missing and this process may install it (root and apt-get, as on CI), it is
installed once with services kept from starting; otherwise the RabbitMQ tests are skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kombu import Connection

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD = "/usr/bin/epmd"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
INSTALL_LOCK = Path(tempfile.gettempdir()) / "celery-mcp-tests-rabbitmq-install.lock"


def install_if_missing() -> str | None:
    """None when `rabbitmq-server` can run here, else why not (installing it first if we can).
    Parallel test processes take turns (a lock file): apt-get runs once."""
    if _installed():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return None if _installed() else _install()


def _installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists() and Path(EPMD).exists()


def _install() -> str | None:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    # The package starts its service on install; a test machine wants only our private nodes.
    blocked = not POLICY_RC.exists()
    if blocked:
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "rabbitmq-server"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                return f"apt-get install rabbitmq-server failed: {done.stderr[-500:]}"
    finally:
        if blocked:
            POLICY_RC.unlink()
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # beam.smp and its helpers
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class RabbitNode:
    """A running private node: `url` is its AMQP address (guest over loopback)."""

    url: str
    base: Path
    node: str
    epmd_port: int
    _epmd: subprocess.Popen[bytes]
    _server: subprocess.Popen[bytes]
    _log: IO[bytes]

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        """`rabbitmqctl -n <node> args...` (an Erlang node itself: same cookie and epmd)."""
        port = str(free_port())  # its default distribution ports collide between jobs
        env = _base_env(self.base) | {
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": port,
            "RABBITMQ_CTL_DIST_PORT_MAX": port,
        }
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args}: {done.stderr}")
        return done.stdout

    def stop(self) -> None:
        _kill_group(self._server, 30)
        _kill_group(self._epmd, 5)
        self._log.close()


def _base_env(base: Path) -> dict[str, str]:
    return {
        "PATH": f"{RABBITMQ_BIN}:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(base / "home"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
    }


def _wait_amqp(url: str, port: int, server: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited (rc={server.returncode})")
        if _port_open(port):
            with contextlib.suppress(Exception), Connection(url, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
                return  # the listener opens before the vhost: a login proves it is ready
        time.sleep(0.1)
    raise TimeoutError(f"RabbitMQ did not accept AMQP on {url}")


@contextlib.contextmanager
def private_rabbit(base: Path, start_timeout_s: float = 90.0) -> Iterator[RabbitNode]:
    """Start a node with all its state under `base`; stop it (and its epmd) on exit."""
    base = base.resolve()
    for sub in ("home", "mnesia", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    amqp_port, dist_port, epmd_port = free_port(), free_port(), free_port()
    node = f"celerymcp_{os.getpid()}_{uuid.uuid4().hex[:8]}@localhost"
    cookie = base / "home" / ".erlang.cookie"
    cookie.write_text(uuid.uuid4().hex.upper())
    cookie.chmod(0o400)
    conf = base / "rabbitmq.conf"
    conf.write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
        "loopback_users.guest = true\n"
        "disk_free_limit.absolute = 10MB\n"  # small CI disks must not block publishers
        "log.console = false\n"
        f"log.file = {base / 'log' / 'rabbit.log'}\n"
        "collect_statistics = none\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text("# empty: keeps /etc/rabbitmq/rabbitmq-env.conf out\n")
    env = _base_env(base) | {
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_BASE": str(base),
        "RABBITMQ_CONFIG_FILE": str(conf),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_MNESIA_DIR": str(base / "mnesia" / node),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "mnesia" / f"{node}-feature_flags"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        # a daemonised epmd would outlive us: ours runs in the foreground, on loopback
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
        ),
    }
    log = open(base / "log" / "console.log", "wb")  # noqa: SIM115
    spawn: dict[str, Any] = {
        "env": env,
        "stdin": subprocess.DEVNULL,
        "stdout": log,
        "stderr": subprocess.STDOUT,
        "start_new_session": True,
    }
    epmd = subprocess.Popen([EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"], **spawn)
    deadline = time.monotonic() + 10
    while not _port_open(epmd_port):
        if epmd.poll() is not None or time.monotonic() > deadline:
            _kill_group(epmd, 1)
            raise RuntimeError(f"epmd did not start on port {epmd_port}")
        time.sleep(0.02)
    server = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], cwd=base, **spawn)
    url = f"amqp://guest:guest@127.0.0.1:{amqp_port}//"
    rabbit = RabbitNode(url, base, node, epmd_port, epmd, server, log)
    try:
        _wait_amqp(url, amqp_port, server, time.monotonic() + start_timeout_s)
        yield rabbit
    except BaseException:
        print((base / "log" / "console.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        rabbit.stop()
