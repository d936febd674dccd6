"""A call's files: its directory, the engine's files in it, copies made as root, removal.

Everything here runs as root on files a hostile script made or changed:
names are looked up without following links, copies take regular files
only, and removal holds no recursion or path length a deep tree could
break (see :func:`remove_tree`).
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shutil
import stat
from pathlib import Path

SECRETS = (
    "*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.env",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.stack.yaml",
)  # fmt: skip
"""Names of files never copied into a call's view of code: keys, credentials, settings."""


def is_secret(name: str) -> bool:
    """Whether a file named ``name`` stays out of code a call sees (dotfiles, keys...)."""
    return name.startswith(".") or any(fnmatch.fnmatchcase(name, p) for p in SECRETS)


def copy_regular_files(source: Path, target: Path, *, code: bool = False) -> None:
    """Copy a build made by the sandbox uid, or code, as root, without trusting it.

    Only directories and regular files are copied (never symlinks, fifos or
    devices: a link to /etc/shadow or a fifo must not be read as root), and
    the copies are root's, read-only for everybody else. With ``code`` (an
    action's folder), secrets (:func:`is_secret`: dotfiles such as ``.env``,
    keys, credentials) are left out too: the copies are readable by every call.
    """
    target.mkdir(mode=0o755)
    for entry in os.scandir(source):
        info = entry.stat(follow_symlinks=False)
        if code and is_secret(entry.name):
            continue
        if stat.S_ISDIR(info.st_mode):
            copy_regular_files(Path(entry.path), target / entry.name, code=code)
        elif stat.S_ISREG(info.st_mode):
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as src, open(target / entry.name, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(target / entry.name, 0o755 if info.st_mode & 0o100 else 0o644)


SHM = "/dev/shm"
SHM_ROOM = 1024**3


def roomy_tmpfs(path: str) -> bool:
    """Whether ``path`` is a writable tmpfs mount with SHM_ROOM bytes free.

    Under ``--isolate none`` call directories go there unless ``temp_dir``
    or $TMPDIR says otherwise:
    each call makes and removes its directory and two Hook files, which on a
    disk file system costs the server far more CPU than on tmpfs (1.4 ms a
    call on ext4 here: inode allocation after so many deletions is slow).
    The rest of the engine's folder (scripts, builds) stays on disk.
    """
    try:
        free = os.statvfs(path)
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            tmpfs = any(line.split()[1:3] == [path, "tmpfs"] for line in mounts)
    except OSError:
        return False
    room = free.f_bavail * free.f_frsize >= SHM_ROOM
    return tmpfs and room and os.access(path, os.W_OK | os.X_OK)


META = ".stack"
_META_FILES = ("hook.json", "hook.flat")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_meta(meta: Path, name: str, data: bytes) -> None:
    """Write one of the engine's files into a call's ``.stack`` (a few system calls)."""
    fd = os.open(f"{meta}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def remove_call_dir(workdir: Path) -> bool:
    """Remove a call's directory at once if it holds only the engine's own files.

    Most calls leave nothing behind, and removing what the engine made takes
    a handful of system calls: cheaper in the event loop than a hand-off to
    a worker thread for :func:`remove_tree`. The script may have renamed or
    replaced anything in its directory, so names are only looked up through
    directory descriptors opened without following links. Returns False,
    leaving the rest for :func:`remove_tree`, when anything else is there.
    """
    try:
        top = os.open(workdir, _DIR_FLAGS)
    except OSError:
        return False
    try:
        try:
            meta = os.open(META, _DIR_FLAGS, dir_fd=top)
        except FileNotFoundError:
            meta = -1
        if meta >= 0:
            try:
                for name in _META_FILES:
                    try:
                        os.unlink(name, dir_fd=meta)
                    except FileNotFoundError:
                        pass
            finally:
                os.close(meta)
            os.rmdir(META, dir_fd=top)
        os.rmdir(workdir)
    except OSError:
        return False
    finally:
        os.close(top)
    return True


def remove_tree(path: Path | str, *, dir_fd: int | None = None) -> None:
    """Remove a directory a script filled, whatever it holds (blocking).

    With ``dir_fd``, ``path`` is a name in that directory (no link on the way
    to it is followed).

    Depth costs nothing: every directory met is first moved up to ``path``
    itself, then emptied, so no recursion, no long path and at most three
    open descriptors are needed, whether the tree is 3,000 levels deep, has
    folders of mode 000, links (removed, never followed), sockets, fifos or
    millions of files. The call's processes are all dead when this runs, so
    nothing moves under it.

    Raises:
        OSError: something could not be removed (``path`` itself is then
            left, holding what remains, for the caller to retry or set aside).
    """
    try:
        top = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    failed: OSError | None = None
    try:
        os.fchmod(top, 0o700)
        pending = ["."]
        emptied: list[str] = []
        moved = 0
        token = secrets.token_hex(4)  # a name the script cannot have taken
        while pending:
            name = pending.pop()
            try:
                folder = os.open(name, _DIR_FLAGS, dir_fd=top)
            except OSError as exc:
                failed = failed or exc
                continue
            try:
                os.fchmod(folder, 0o700)  # a script may have made it unreadable
                for entry in list(os.scandir(folder)):
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            moved += 1
                            flat = f".stack-rm-{token}-{moved}"
                            os.rename(entry.name, flat, src_dir_fd=folder, dst_dir_fd=top)
                            pending.append(flat)
                        else:
                            os.unlink(entry.name, dir_fd=folder)
                    except OSError as exc:
                        failed = failed or exc
            finally:
                os.close(folder)
            if name != ".":
                emptied.append(name)
        for name in emptied:
            try:
                os.rmdir(name, dir_fd=top)
            except OSError as exc:
                failed = failed or exc
    finally:
        os.close(top)
    if failed is not None:
        raise failed
    os.rmdir(path, dir_fd=dir_fd)
