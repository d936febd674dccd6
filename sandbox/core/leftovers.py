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
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if info.st_uid == uid:
                if stat.S_ISDIR(info.st_mode):
                    remove_tree(Path(entry.path))
                else:
                    os.unlink(entry.path)
                removed += 1
            elif depth > 1 and stat.S_ISDIR(info.st_mode) and info.st_mode & 0o002:
                removed += _sweep(Path(entry.path), uid, depth - 1)
        except OSError as exc:
            log.warning("leftover of uid %d: %s: %s", uid, entry.path, exc)
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
