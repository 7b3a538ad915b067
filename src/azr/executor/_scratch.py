"""Sweeping what a job left in the host's world-writable directories (standard library only).

Only needed in the ``rlimits`` tier run as root: there a job has no seccomp filter (which denies every change to
the file system) and runs as a uid of its own, so whatever it created in a world-writable directory is owned by
that uid and is removed before the uid runs another job. Jobs in every other tier cannot create files.
"""

import os

WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")


def sweep_owned(uid: int) -> None:
    """Remove every entry owned by ``uid`` directly inside the world-writable directories."""
    for d in WORLD_WRITABLE:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            try:
                if os.lstat(path).st_uid == uid:
                    remove(path)
            except OSError:
                pass


def remove(path: str) -> None:
    """Remove a file or a directory tree, ignoring errors."""
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil  # only when a job left something: shutil pulls in bz2, lzma, zlib

        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
