"""The write quota of a call: its directory is a tmpfs of its own, capped in bytes and files.

A root server mounts a size-capped tmpfs (``size=``, ``nr_inodes=``) on
each call's directory (``<calls>/cN``) and unmounts it when the call ends.
The directory is the call's only writable place on the host under
bubblewrap (its ``/tmp``, cwd and HOME; the other writable places are
bubblewrap's own capped tmpfs mounts), so a call cannot fill the host's
disk, nor its inode table. Its pages are charged to the memory cgroup of
whoever writes them (see ``cgroups.py``): what a call writes there also
counts against its memory limit, so the quota a call really has is the
lower of the two.

Why a tmpfs and not a loop device or an XFS project quota: mounting and
unmounting a small tmpfs costs about as much as making and removing the
directory on a disk (both about 0.3 ms here), needs no file system of a
given kind under the engine's folder, and unmounting frees whatever the
call wrote at once, however many files.

Blocking, and Linux only (``mount(2)`` through the C library).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MNT_DETACH = 0x2
# Past this much written, unmounting (freeing the pages) goes to a worker thread.
SMALL = 8 * 1024 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount(path: Path, size: int, files: int, uid: int) -> None:
    """Mount a tmpfs of ``size`` bytes and ``files`` inodes on ``path``, mode 0700, ``uid``'s.

    Raises:
        OSError: the mount failed (not root, or no tmpfs).
    """
    options = f"size={size},nr_inodes={files},mode=0700,uid={uid},gid={uid}"
    done = _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                       options.encode())  # fmt: skip
    if done != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting a tmpfs on {path}: {os.strerror(err)}")


def written(path: Path) -> int:
    """Bytes in use on the tmpfs at ``path`` (a statvfs call)."""
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def unmount(path: Path) -> None:
    """Unmount the tmpfs at ``path`` (freeing everything on it) and remove the mount point.

    Raises:
        OSError: it could not be unmounted.
    """
    if _libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unmounting {path}: {os.strerror(err)}")
    os.rmdir(path)
