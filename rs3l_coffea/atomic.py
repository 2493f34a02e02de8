"""Atomic file output: write to a temporary name in the same directory, then rename.

A crash or SIGKILL leaves either the previous file or the complete new one, never a
truncated file under the final name. Every writer in the package goes through here.

An exception removes the temporary at once. A SIGKILL cannot: the temporary
(``.<name>.<host>-<pid>.<random>.tmp<suffix>``) stays behind, and the next write of the same
path removes it once its writer process (same host, that pid) no longer runs. Temporaries of
live writers and of other hosts (shared file systems) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit it is renamed onto ``path``.

    The temporary keeps the suffix of ``path`` (some writers choose a format by suffix).
    On an exception the temporary is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(
        dir=final.parent,
        prefix=f".{final.name}.{_host()}-{os.getpid()}.",
        suffix=f".tmp{final.suffix}",
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        if tmp.is_file():
            # mkstemp creates 0600; give the result the permissions a plain open() would
            # (colleagues on a shared file system must be able to read outputs).
            os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` for writing, atomically (modes ``w``, ``wb``, ``wt``)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open only writes; got mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    # Dots would make the name ambiguous; the host only has to be recognisable.
    return socket.gethostname().replace(".", "_") or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Temporaries of ``path`` left by writers on this host that no longer run (e.g. SIGKILLed)."""
    final = Path(path)
    prefix = f".{final.name}.{_host()}-"
    stale = []
    for candidate in final.parent.glob(f".{_glob_escape(final.name)}.*.tmp{_glob_escape(final.suffix)}"):
        rest = candidate.name[len(prefix):] if candidate.name.startswith(prefix) else ""
        pid_text = rest.split(".", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            stale.append(candidate)
    return stale


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete :func:`stale_temporaries` of ``path``; return what was removed."""
    removed = []
    for candidate in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def _glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped (file names may contain ``[``)."""
    import glob

    return glob.escape(text)
