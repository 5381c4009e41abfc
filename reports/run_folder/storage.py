"""Reading and writing run files where the run lives: a local path or a URI (s3://, gs://, ...)
through pyarrow.fs, the same layer Ray uses for its storage_path."""

from __future__ import annotations

import os
import posixpath
import re

import pyarrow.fs as pafs

from condgen_bench.reports.run_folder import faults


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """Absolute local path, or the URI unchanged (workers change directory: never pass relative paths)."""
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def split(path: str) -> tuple[str, str]:
    """(parent folder, name) of a local path or a URI."""
    path = path.rstrip("/")
    return posixpath.split(path) if is_uri(path) else os.path.split(path)


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


TEMPORARY = re.compile(r"\.tmp\d+$")  # write_files' temporary names: <file>.tmp<pid of the writer>


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file, creating its folder: write_files for one file."""
    write_files({path: data})


def write_files(files: dict[str, bytes]) -> None:
    """Write whole files {path: bytes} as one step where the storage allows: each local file is written to
    a temporary name and flushed to disk (fsync), and only when every one is written are they renamed over
    the old ones, so a full disk leaves every old file as it was; if anything fails the temporary files
    are removed. A reader sees an old file or the whole new one, never half. (On object storage, s3:// or
    gs://, each object is replaced whole as it is written.)"""
    temps, current = {}, None
    try:
        for path, data in files.items():
            fs, p = _fs(path)
            current = p
            fs.create_dir(posixpath.dirname(p) if is_uri(path) else os.path.dirname(p), recursive=True)
            if not isinstance(fs, pafs.LocalFileSystem):
                with fs.open_output_stream(p) as f:
                    f.write(data)
                continue
            temps[p] = tmp = f"{p}.tmp{os.getpid()}"  # matches TEMPORARY
            with open(tmp, "wb") as f:
                view = memoryview(data)
                f.write(view[:len(view) // 2])
                faults.hit("write", path=p)  # drills: a disk that fills mid-write
                f.write(view[len(view) // 2:])
                f.flush()
                os.fsync(f.fileno())
        for p, tmp in list(temps.items()):
            current = p
            os.replace(tmp, p)
            del temps[p]
    except BaseException as error:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
        if isinstance(error, OSError) and current:  # say which file (errno, e.g. ENOSPC, kept)
            raise OSError(error.errno, f"could not write {current}: {error.strerror or error}") from error
        raise


def remove_temporaries(folder: str) -> list[str]:
    """Delete the temporary files (TEMPORARY) under a local folder, at any depth, that a writer killed
    between write_files' write and its rename left behind: the paths removed. Call it only where no writer
    is at work in the folder (a run's driver holding its lock, before its trials start; a trial's rank 0
    before its group trains). Object storage has no temporary files: []."""
    if is_uri(folder) or not os.path.isdir(folder):
        return []
    removed = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if TEMPORARY.search(name):
                path = os.path.join(parent, name)
                try:
                    os.remove(path)
                except FileNotFoundError:  # gone since the listing
                    continue
                removed.append(path)
    return sorted(removed)


def remove(path: str) -> None:
    """Delete a file if it exists."""
    fs, p = _fs(path)
    if fs.get_file_info(p).type == pafs.FileType.File:
        fs.delete_file(p)


def remove_folder(path: str) -> None:
    """Delete a folder and everything in it, if it exists."""
    fs, p = _fs(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory:
        fs.delete_dir(p)


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
