"""Reading and writing run files where the run lives: a local path or a URI (s3://, gs://, ...)
through pyarrow.fs, the same layer Ray uses for its storage_path."""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """Absolute local path, or the URI unchanged (workers change directory: never pass relative paths)."""
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file, creating its folder. A local file is written to a temporary name, flushed to
    disk (fsync) and renamed over the old one, so a reader sees the old file or the whole new one, never
    half; if anything fails (a full disk, say) the temporary file is removed and the old file stays."""
    fs, p = _fs(path)
    fs.create_dir(posixpath.dirname(p) if is_uri(path) else os.path.dirname(p), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{p}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException as error:
            if os.path.exists(tmp):
                os.remove(tmp)
            if isinstance(error, OSError):  # say which file (errno, e.g. ENOSPC, kept)
                raise OSError(error.errno, f"could not write {p}: {error.strerror or error}") from error
            raise
    else:
        with fs.open_output_stream(p) as f:
            f.write(data)


def read_bytes(path: str) -> bytes:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def list_dir(path: str) -> list[str]:
    """Names (not paths) of the entries of a folder, sorted; [] if it does not exist."""
    fs, p = _fs(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    return sorted(posixpath.basename(info.path) for info in fs.get_file_info(pafs.FileSelector(p)))
