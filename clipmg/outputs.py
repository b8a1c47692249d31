"""Where results go: targets checked before the work starts, and I/O failures during the work
turned into one line that says what was kept.

Every writer checks its target up front (`check_output_file`, `check_output_folder`) so that a
folder given where a file is wanted, a parent that is a file, or a place without write permission
fails before any image is read. A file written in pieces (`streamed_output`) keeps its complete
pieces in ``<name>.partial`` when a write fails (disk full, quota, a vanished folder) and the
error names that file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from clipmg.errors import OutputError

PARTIAL_SUFFIX = ".partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_CREATE_MODE = 0o666 & ~_umask()


def _cause(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing ancestor of `path` must be a folder we may create entries in."""
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            raise OutputError(f"{what} {path}: {parent} is a broken link")
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: no permission to write in {parent}")


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """`path` can be written as a file: not a folder, under folders that exist or can be made
    and may be written in. OutputError naming the path and the cause otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name (e.g. {path / 'predictions.csv'})")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise OutputError(f"{what} {path}: no permission to replace it")
    _check_parents(path, what)
    return path


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """`path` can hold files: a folder (or nothing yet) under folders we may write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {path}: no permission to write in it")
        return path
    _check_parents(path, what)
    return path


def write_failed(path: str | os.PathLike, error: OSError, kept: str) -> OutputError:
    """The one-line error for an OSError while writing `path`; `kept` says what was kept."""
    return OutputError(f"could not write {path}: {_cause(error)} (errno {error.errno}); {kept}")


def partial_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}{PARTIAL_SUFFIX}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


class StreamedOutput:
    """A text file written in pieces (`write(text, rows)`) to a temporary beside `path` and
    renamed into place when complete. The file holds only whole pieces: a failed write is cut
    back to the last whole piece, renamed to ``<path>.partial`` and reported (OutputError)."""

    def __init__(self, path: Path, fd: int, temporary: Path, unit: str):
        self.path, self.fd, self.temporary, self.unit = path, fd, temporary, unit
        self.rows = 0
        self.size = 0

    def write(self, text: str, rows: int = 0) -> None:
        data = text.encode("utf-8")
        try:
            _write_all(self.fd, data)
        except OSError as error:
            raise self._keep_partial(error) from error
        self.size += len(data)
        self.rows += rows

    def _keep_partial(self, error: OSError) -> OutputError:
        kept = partial_path(self.path)
        try:
            os.ftruncate(self.fd, self.size)
            os.replace(self.temporary, kept)
        except OSError:
            return write_failed(self.path, error, f"the {self.rows} {self.unit} written so far are in "
                                                  f"{self.temporary}")
        return write_failed(self.path, error, f"the {self.rows} {self.unit} written so far are in {kept}")


@contextlib.contextmanager
def streamed_output(path: str | os.PathLike, what: str = "output", unit: str = "rows"):
    """A `StreamedOutput` for `path` (checked first); `path` is replaced only when the block
    succeeds, and an earlier file at `path` stays untouched otherwise."""
    path = check_output_file(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    except OSError as error:
        raise write_failed(path, error, "nothing was written") from error
    stream = StreamedOutput(path, fd, Path(temporary), unit)
    try:
        yield stream
        os.close(fd)
        fd = -1
        os.chmod(temporary, _CREATE_MODE)  # mkstemp makes the file private; give it open()'s mode
        os.replace(temporary, path)
    except OutputError:
        raise
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise write_failed(path, error, "the earlier file there, if any, is untouched") from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, kept: str = "the earlier file there, if any, is untouched"):
    """Turn an OSError raised while writing `path` (atomically, so nothing half-written is left)
    into an OutputError naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise write_failed(getattr(error, "filename", None) or path, error, kept) from error
