"""The embedded broker trusts only its own private data dir, and only its own process.

No server is started here: these are the checks made before one is started or signalled.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celery_mcp.errors import Forbidden
from celery_mcp.runtime import embedded as emb
from celery_mcp.runtime import proc_identity as pi
from celery_mcp.runtime.private_files import write_private

NOBODY = 65534
READERS = pytest.mark.parametrize("reader", [pi._from_proc, pi._from_ps], ids=["proc", "ps"])
Reader = Callable[[int], pi.Identity | None]
as_root = pytest.mark.skipif(
    os.getuid() != 0, reason="a dir owned by another user can only be made as root"
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _record(data: Path, **fields: object) -> Path:
    data.mkdir(mode=0o700, exist_ok=True)
    path = data / emb.STATE_FILE
    state = {"pid": 1, "port": 1, "password": "pw", "data_dir": str(data)} | fields
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    return path


# -- who a pid is


@READERS
def test_identity_names_a_live_process_and_is_stable(
    reader: Reader, sleeper: subprocess.Popen[bytes]
) -> None:
    first = reader(sleeper.pid)
    assert first is not None and first.name == "sleep"
    assert reader(sleeper.pid) == first


@READERS
def test_identity_of_a_dead_or_zombie_pid_is_none(reader: Reader) -> None:
    proc = subprocess.Popen(["true"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie (unreaped)
    assert reader(proc.pid) is None
    proc.wait()
    assert reader(proc.pid) is None


def test_a_recycled_pid_is_not_the_recorded_server(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    now = pi.identity(sleeper.pid)
    assert now is not None
    same = emb.EmbeddedServer(sleeper.pid, 1, "pw", str(tmp_path), now.name, now.started)
    assert emb._is_ours(same)
    assert not emb._is_ours(emb.EmbeddedServer(sleeper.pid, 1, "pw", str(tmp_path)))  # legacy
    earlier = emb.EmbeddedServer(sleeper.pid, 1, "pw", str(tmp_path), now.name, "proc:x:1")
    assert not emb._is_ours(earlier)
    other = emb.EmbeddedServer(sleeper.pid, 1, "pw", str(tmp_path), "valkey-server", now.started)
    assert not emb._is_ours(other)


def test_stop_never_signals_a_recycled_pid(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    data = tmp_path / "data"
    _record(data, pid=sleeper.pid, name="valkey-server", started="proc:before-reboot:42")
    assert emb.stop(data, timeout_s=0.5) is False
    _record(data, pid=sleeper.pid)  # a record of an older version: no start time
    assert emb.stop(data, timeout_s=0.5) is False
    assert sleeper.poll() is None


# -- whose data dir


def test_open_data_dir_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    emb.stop(data)  # checks the dir, starts nothing
    assert data.stat().st_mode & 0o777 == 0o700


def test_open_data_dir_that_cannot_be_fixed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)

    def refuse(self: Path, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refuse)
    with pytest.raises(emb.UnsafeDataDir, match="mode 755") as err:
        emb.ensure_running(data)
    assert str(data) in err.value.message and isinstance(err.value, Forbidden)
    assert not (data / emb.STATE_FILE).exists()


@as_root
def test_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _record(data)
    os.chown(data, NOBODY, NOBODY)
    for attempt in (emb.ensure_running, emb.stop):
        with pytest.raises(emb.UnsafeDataDir, match=f"uid {NOBODY}") as err:
            attempt(data)
        assert str(data) in err.value.message
    assert data.stat().st_uid == NOBODY and data.stat().st_mode & 0o777 == 0o700


def test_state_file_open_to_others_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = _record(data)
    path.chmod(0o644)
    with pytest.raises(emb.UnsafeDataDir, match="mode 644"):
        emb.read_state(data)
    with pytest.raises(emb.UnsafeDataDir):
        emb.ensure_running(data)


@as_root
def test_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    os.chown(_record(data), NOBODY, NOBODY)
    with pytest.raises(emb.UnsafeDataDir, match=f"uid {NOBODY}"):
        emb.read_state(data)


def test_state_file_symlink_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    target = _record(tmp_path / "elsewhere")
    data.mkdir(mode=0o700)
    (data / emb.STATE_FILE).symlink_to(target)
    with pytest.raises(emb.UnsafeDataDir, match="symlink"):
        emb.read_state(data)


def test_private_files_are_written_0600_through_no_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = tmp_path / "valkey.conf"
    (tmp_path / "valkey.conf.tmp").symlink_to(victim)
    path.symlink_to(victim)
    old = os.umask(0)
    try:
        write_private(path, "secret")
    finally:
        os.umask(old)
    assert victim.read_text() == "untouched"
    assert not path.is_symlink() and path.read_text() == "secret"
    assert path.stat().st_mode & 0o777 == 0o600
