"""Cleaning the sandbox's writable places between jobs (standard library only: the worker imports it).

Inside bwrap a child runs with the worker's uid, so it can write to the worker's private /tmp, /dev/shm and the small
tmpfs that hide the user's directories. :func:`sweep` removes, after every child, whatever was not there when the
worker started, and every working directory but those of running children.
"""

import os

_dirs: dict[str, tuple[int, set[str]]] = {}  # writable dir -> (mtime, entries) when the worker started


def snapshot(dirs: list[str]) -> None:
    """Remember what the writable places hold when the worker starts."""
    for d in dirs:
        try:
            _dirs[d] = (os.stat(d).st_mtime_ns, set(os.listdir(d)))
        except OSError:
            pass


def sweep(base: str, busy: set[str]) -> None:
    """Remove whatever a child left outside its working directory in the sandbox's writable places (the private
    /tmp, /dev/shm and the small tmpfs over hidden directories), so that no job can leave files for the next."""
    for name in os.listdir(base):
        if name not in busy:
            remove(os.path.join(base, name))
    for d, (mtime, entries) in _dirs.items():
        try:
            if os.stat(d).st_mtime_ns == mtime:
                continue
            for name in set(os.listdir(d)) - entries:
                remove(os.path.join(d, name))
            _dirs[d] = (os.stat(d).st_mtime_ns, entries)
        except OSError:
            pass


def remove(path: str) -> None:
    """Remove a file or a directory tree, ignoring errors."""
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil  # only when a child left something: shutil pulls in bz2, lzma, zlib (a larger zygote)

        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
