"""Files only this user may read: the data dir (0700) and the secrets kept in it (0600).

Other local users can reach loopback ports, not these files: the embedded server's password
(`valkey.json`) and the HTTP token live here. A file or dir another user owns, or that is open
to group/other, is refused (`UnsafeDataDir`); symlinks are never followed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from pathlib import Path

from celery_mcp.errors import Forbidden

__all__ = ["UnsafeDataDir", "check_private", "private_dir", "read_private", "write_private"]


class UnsafeDataDir(Forbidden):
    """The data dir or a file in it is another user's, or open to other users: refused."""


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_private(path: Path, st: os.stat_result, mode: int) -> None:
    """Refuse `path` unless it is the user's own and no more open than `mode`."""
    if st.st_uid != os.getuid():
        raise UnsafeDataDir(
            f"{path} belongs to {_owner(st.st_uid)}, not to this user ({_owner(os.getuid())})",
            hint="use a data dir of your own (CELERY_MCP_DATA_DIR)",
        )
    if st.st_mode & 0o777 & ~mode:
        raise UnsafeDataDir(
            f"{path} has mode {st.st_mode & 0o777:o}: not private to this user (other users "
            "may read or change it)",
            hint=f"chmod {mode:o} {path}, or remove it so it is created anew",
        )


def private_dir(data_dir: Path) -> Path:
    """Create the data dir (0700), or check it is the user's own and private (fixing its mode)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = data_dir.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        with contextlib.suppress(OSError):  # a failed chmod is refused just below
            data_dir.chmod(0o700)
            st = data_dir.stat()
    check_private(data_dir, st, 0o700)
    return data_dir


def read_private(path: Path) -> str | None:
    """The text of `path` (None: missing or unreadable); refused when it is a symlink, another
    user's, or not mode 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if path.is_symlink():
            raise UnsafeDataDir(
                f"{path} is a symlink", hint="remove it; celery-mcp writes its own"
            ) from exc
        return None
    with os.fdopen(fd) as fh:
        check_private(path, os.fstat(fh.fileno()), 0o600)
        try:
            return fh.read()
        except (OSError, ValueError):
            return None


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 (never writing through a planted file or link)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    tmp.replace(path)
