"""A service's code folder, staged: the copy its calls run and import from.

A served script's folder (or a folder service's root) is its code: the
modules, data and templates beside the script. Calls never see the folder
itself; they get a copy in the engine's own folder, synced from it:

- readable by the call's uid and writable by nobody but the server (root's
  files, mode 0644/0755; under bwrap also bound read-only at /stack/code);
- holding only what the call's uid could read where it lies (world-readable
  files and folders when the server is root; what the server itself can read
  otherwise, when calls run as its user anyway), and nothing anyone may
  write to (a call could change the code of the calls after it);
- without what looks like a secret: dotfiles and dot-folders (``.env``,
  ``.git``, ``.ssh``), keys and certificates (``*.key``, ``*.pem``, ...),
  the services' own ``*.stack.yaml`` settings; without ``__pycache__``;
  without symlinks, fifos and devices (never followed);
- within :data:`MAX_FILES` files and :data:`MAX_BYTES` bytes: a bigger folder
  (a home folder, a checkout with its dependencies...) is not copied, and the
  service gets its script alone, with a log line saying so.

The scripts served are always copied, whatever their names and modes: the
operator named them. Blocking throughout (file system walks and copies).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.files import is_secret

MAX_FILES = 2000
MAX_BYTES = 64 * 1024 * 1024
SKIPPED_FOLDERS = ("__pycache__",)


@dataclass
class Survey:
    """What of a folder is staged, and what is left out.

    Attributes:
        files: relative path -> (size, mtime in ns, mode) of each file copied.
        left_out: reason -> how many entries it kept out.
        too_large: why the folder is not staged at all, or None.
    """

    files: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)
    too_large: str | None = None

    def skip(self, reason: str) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1

    def summary(self) -> str:
        """``12 files, 40 KiB; left out: 2 secret-looking, 1 unreadable``."""
        size = sum(entry[0] for entry in self.files.values())
        line = f"{len(self.files)} file(s), {_size(size)}"
        if self.left_out:
            line += "; left out: " + ", ".join(
                f"{count} {reason}" for reason, count in sorted(self.left_out.items())
            )
        return line


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024**2:
        return f"{count / 1024:.0f} KiB"
    return f"{count / 1024**2:.0f} MiB"


def _readable(info: os.stat_result, path: str, root: bool) -> bool:
    """Whether a call could read ``path`` (and list it, for a folder) where it lies."""
    if not root:  # calls run as the server's own user
        wanted = os.R_OK | (os.X_OK if stat.S_ISDIR(info.st_mode) else 0)
        return os.access(path, wanted)
    need = 0o005 if stat.S_ISDIR(info.st_mode) else 0o004
    return info.st_mode & need == need


def survey(folder: Path, always: Iterable[str] = (), *, whole: bool = True,
           root: bool | None = None, max_files: int = MAX_FILES,
           max_bytes: int = MAX_BYTES) -> Survey:  # fmt: skip
    """List what of ``folder`` is staged (see the module's docstring).

    Args:
        folder: the code folder.
        always: names (relative paths) copied whatever they look like: the scripts served.
        whole: False stages ``always`` alone.
        root: whether calls run as other uids (default: the server is root).
        max_files, max_bytes: past either, only ``always`` is staged and
            ``too_large`` says why.

    Raises:
        FileNotFoundError: a file of ``always`` is gone.
    """
    root = os.geteuid() == 0 if root is None else root
    found = Survey()
    for name in always:
        info = os.stat(folder / name)  # the script itself may be a symlink
        if stat.S_ISREG(info.st_mode):
            found.files[name] = (info.st_size, info.st_mtime_ns, info.st_mode)
    if not whole:
        return found
    total = sum(entry[0] for entry in found.files.values())
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            entries = list(os.scandir(folder / relative if relative else folder))
        except OSError:
            found.skip("unreadable")
            continue
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            if name in found.files:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if is_secret(entry.name):
                found.skip("secret-looking (dotfiles, keys, settings)")
            elif stat.S_ISLNK(info.st_mode):
                found.skip("symlinks")
            elif not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                found.skip("special files")
            elif not _readable(info, entry.path, root):
                found.skip("unreadable by calls")
            elif info.st_mode & 0o002:
                # A call could change it (--isolate none), and so every later call's code.
                found.skip("writable by anyone")
            elif stat.S_ISDIR(info.st_mode):
                if entry.name in SKIPPED_FOLDERS:
                    found.skip("__pycache__ folders")
                else:
                    pending.append(name)
            else:
                found.files[name] = (info.st_size, info.st_mtime_ns, info.st_mode)
                total += info.st_size
                if len(found.files) > max_files or total > max_bytes:
                    alone = survey(folder, always, whole=False, root=root)
                    alone.too_large = f"it holds more than {max_files} files or {_size(max_bytes)}"
                    return alone
    return found


def not_code(folder: Path) -> str | None:
    """Why the folder of a single script is not taken whole as its code, or None.

    A home folder holds a person's files, not a service's modules; a folder
    others may write to (``/tmp``) holds whatever they put there, which the
    service would then import.
    """
    try:
        resolved = folder.resolve()
        info = os.stat(resolved)
    except OSError as exc:
        return str(exc)
    if resolved == Path("/"):
        return "it is the root folder"
    if info.st_mode & 0o002:
        return "anyone may write to it"
    # The server's own, root's and people's (not system users': www-data's
    # home is /var/www, where services do live).
    homes = {Path.home()}
    try:
        homes |= {
            Path(entry.pw_dir)
            for entry in pwd.getpwall()
            if entry.pw_uid == 0 or 1000 <= entry.pw_uid < 65534
        }
    except OSError:
        pass
    if resolved in {home.resolve() for home in homes if str(home) not in ("", "/")}:
        return "it is a home folder"
    return None


class StagedCode:
    """A folder's staged copy at ``target``, kept in step with it by :meth:`sync`.

    The copy stays at one path (a warm interpreter's sandbox binds it), and
    is synced file by file: each changed file is replaced atomically, files
    gone from the source are removed.
    """

    def __init__(self, source: Path, target: Path, always: Iterable[str] = (),
                 *, whole: bool = True) -> None:  # fmt: skip
        self.source = source
        self.target = target
        self.always = set(always)
        self.whole = whole
        self.last: Survey | None = None

    def sync(self) -> bool:
        """Bring the copy in step with the source; returns whether anything changed.

        Raises:
            FileNotFoundError: a script of ``always`` is gone.
        """
        found = survey(self.source, sorted(self.always), whole=self.whole)
        if self.last is not None and found.files == self.last.files:
            return False
        before = self.last.files if self.last is not None else {}
        self.target.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, signature in found.files.items():
            if before.get(name) != signature or not (self.target / name).is_file():
                self._copy(name, signature[2])
        self._prune(set(found.files))
        self.last = found
        return True

    def _copy(self, name: str, mode: int) -> None:
        """Copy one file; only a script served may be reached through a symlink.

        Anything else is opened without following a link, in case it was
        swapped for one since the survey (the server copies as root).
        """
        target = self.target / name
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.stack-tmp")
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        if name not in self.always:
            flags |= os.O_NOFOLLOW
        try:
            fd = os.open(self.source / name, flags)
        except OSError:
            return  # gone or swapped since the survey: the next sync sees it
        with os.fdopen(fd, "rb") as source:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            with open(temporary, "wb") as copy:
                shutil.copyfileobj(source, copy)
        os.chmod(temporary, 0o755 if mode & 0o100 else 0o644)
        os.replace(temporary, target)

    def _prune(self, keep: set[str]) -> None:
        """Remove what the copy holds beyond ``keep`` (files, then empty folders)."""
        folders = {str(Path(name).parent) for name in keep}
        folders = {f for name in folders for f in _ancestors(name)}
        for top, dirs, files in os.walk(self.target, topdown=False):
            relative = os.path.relpath(top, self.target)
            for name in files:
                path = name if relative == "." else f"{relative}/{name}"
                if path not in keep:
                    os.unlink(os.path.join(top, name))
            for name in dirs:
                path = name if relative == "." else f"{relative}/{name}"
                if path not in folders:
                    shutil.rmtree(os.path.join(top, name), ignore_errors=True)


def _ancestors(folder: str) -> Iterable[str]:
    """``a/b`` -> ``a``, ``a/b``; ``.`` -> nothing."""
    parts = Path(folder).parts
    for index in range(1, len(parts) + 1):
        yield "/".join(parts[:index])
