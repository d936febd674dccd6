"""What a call leaves outside its own directory, removed when it ends (``--isolate none``).

Under bubblewrap a call has its own /tmp, /dev/shm and IPC namespace, gone
with it. Without it, a call of a root server runs as a uid of its own but
shares the host's world-writable folders and System V IPC: files in /tmp,
/var/tmp and /dev/shm, and shared memory, semaphores and message queues,
would outlive it, and the next call given the same uid could read them. When
a call ends (all its processes dead), everything its uid owns there goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import stat
from pathlib import Path

from .files import remove_tree

log = logging.getLogger("stack")

SHARED = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/dev/mqueue"))
"""The host's folders every user may write to."""
_DEPTH = 4  # world-writable folders inside them (another user's sticky /tmp/x) are searched too
_IPC_RMID = 0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def remove_leftovers(uid: int, folders: tuple[Path, ...] = SHARED) -> int:
    """Remove the files and IPC objects ``uid`` owns in the shared places (blocking).

    Returns how many were removed; what cannot be removed is logged.
    """
    removed = 0
    for folder in folders:
        removed += _sweep(folder, uid, _DEPTH)
    return removed + _remove_ipc(uid)


def _sweep(folder: Path, uid: int, depth: int) -> int:
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except OSError:
        return 0
    try:
        return _sweep_at(fd, str(folder), uid, depth)
    finally:
        os.close(fd)


def _sweep_at(fd: int, where: str, uid: int, depth: int) -> int:
    """Remove what ``uid`` owns in the open folder ``fd``, by name, never through a link.

    Another tenant's call may still run and swap a folder for a link while
    this runs as root: names are only looked up relative to descriptors
    opened with ``O_NOFOLLOW``, and only folders root owns (``/tmp``'s own
    sticky subfolders such as ``.X11-unix``) are searched below the top; a
    folder another uid made is its own to clean when its call ends.
    """
    removed = 0
    try:
        entries = list(os.scandir(fd))
    except OSError:
        return 0
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if info.st_uid == uid:
                if stat.S_ISDIR(info.st_mode):
                    remove_tree(entry.name, dir_fd=fd)
                else:
                    os.unlink(entry.name, dir_fd=fd)
                removed += 1
            elif (depth > 1 and stat.S_ISDIR(info.st_mode) and info.st_uid == 0
                  and info.st_mode & 0o002):  # fmt: skip
                below = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                try:
                    removed += _sweep_at(below, f"{where}/{entry.name}", uid, depth - 1)
                finally:
                    os.close(below)
        except OSError as exc:
            log.warning("leftover of uid %d: %s/%s: %s", uid, where, entry.name, exc)
    return removed


def _remove_ipc(uid: int) -> int:
    removed = 0
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}", encoding="ascii") as table:
                header = table.readline().split()
                rows = [line.split() for line in table]
        except OSError:
            continue
        at_id, at_uid, at_cuid = header.index(f"{kind}id" if kind != "msg" else "msqid"), \
            header.index("uid"), header.index("cuid")  # fmt: skip
        for row in rows:
            if uid not in (int(row[at_uid]), int(row[at_cuid])):
                continue
            ident = int(row[at_id])
            if kind == "shm":
                done = _libc.shmctl(ident, _IPC_RMID, None)
            elif kind == "sem":
                done = _libc.semctl(ident, 0, _IPC_RMID)
            else:
                done = _libc.msgctl(ident, _IPC_RMID, None)
            if done == 0:
                removed += 1
            else:
                log.warning("leftover of uid %d: %s %d: %s", uid, kind, ident,
                            os.strerror(ctypes.get_errno()))  # fmt: skip
    return removed
