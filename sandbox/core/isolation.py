"""How a call is isolated: which uid it runs as, and bubblewrap's command line.

Sans-IO apart from :func:`check_bwrap`, which runs bubblewrap once to see if
it works on this machine.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from ..errors import ConfigError
from .launcher import Launch

MODES = ("none", "bwrap", "auto")
SANDBOX_HOME = PurePosixPath("/tmp")
SANDBOX_CODE = PurePosixPath("/stack")
# Files a call never reads even though /etc is shown. Their modes keep the
# call's uid out on a normal system, and a bind costs about 0.2 ms of every
# call's start (bubblewrap re-reads the mount table for each), so one is
# covered with /dev/null only where the call could read it.
_HIDDEN = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")


class UidPool:
    """Hands each running call a uid of its own (when the server is root).

    A distinct uid per concurrent call makes RLIMIT_NPROC count only that
    call's processes and keeps calls out of each other's files, as isolate's
    boxes do.
    """

    def __init__(self, base: int, size: int) -> None:
        if base < 1000:
            raise ConfigError(f"the sandbox uid base must be at least 1000, got {base}")
        self.base = base
        self._free = list(range(size - 1, -1, -1))
        self._lent = 0
        self._retired: set[int] = set()

    def grow(self, count: int) -> None:
        """Add ``count`` uids (for processes held outside the running slots: warm pools)."""
        size = len(self._free) + self._lent + len(self._retired)
        self._free[:0] = range(size + count - 1, size - 1, -1)

    def acquire(self) -> int:
        """A free uid. The caller holds a running-call slot, so one is free."""
        self._lent += 1
        return self.base + self._free.pop()

    def release(self, uid: int) -> None:
        """Give a uid back once every process of its call is dead."""
        self._lent -= 1
        self._free.append(uid - self.base)

    def retire(self, uid: int) -> None:
        """Never lend ``uid`` again (files of its call are left); a new uid takes its place."""
        self._lent -= 1
        self._retired.add(uid)
        self.grow(1)


def bwrap_argv(
    bwrap: str,
    *,
    workdir: Path,
    binds: Sequence[tuple[Path, PurePosixPath]],
    network: bool = False,
    extra_ro: Iterable[str] = (),
    uid: int | None = None,
    dev: Path | None = None,
    tmpfs_size: int | None = None,
    etc: Path | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The bubblewrap command line for one call, up to and including ``--``.

    bubblewrap's own pid namespace (``--unshare-all``) is the call's only
    one: the launcher makes none under bubblewrap, and ending bubblewrap ends
    it (see ``_launcher.c``). It cannot be the launcher's instead:
    bubblewrap, in its user namespace, may not mount a /proc for a pid
    namespace made by root, and falls back to showing the host's.

    Args:
        bwrap: path of the bwrap executable.
        workdir: the call's directory on the host, bound writable at /tmp.
        binds: (host path, sandbox path) pairs bound read-only (script, preludes).
        network: keep the host's network (otherwise a private, empty one).
        extra_ro: more host paths bound read-only at the same place.
        uid: the call's uid, also its gid and with no other group (the server
            is root), or None when calls run as the server's own user.
        dev: a /dev made by :func:`prepare_dev`, bound as one mount (with a
            tmpfs of the call's own at /dev/shm), or None for bubblewrap's
            ``--dev``.
        etc: an /etc made by :func:`prepare_etc` (only what interpreters
            need), or None for the host's whole /etc (less its secret files).
        tmpfs_size: the size of each tmpfs bubblewrap mounts (/dev/shm,
            /run, /var), or None for the kernel's default (half the RAM
            each). Their pages are charged to the call's memory cgroup too;
            the cap holds where there is none. bubblewrap's own root is made
            read-only, so these and the call's directory are the only
            writable places.
        seccomp_fd: the descriptor on which the launcher gives bubblewrap
            the call's compiled seccomp filter (``-f``), installed in the
            program bubblewrap runs, not in bubblewrap (which needs the
            namespace calls it denies); None for none.
    """
    argv = [
        bwrap,
        "--unshare-all",
        *(["--share-net"] if network else []),
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--hostname", "stack",
        "--ro-bind", "/usr", "/usr",
        "--ro-bind", str(etc or "/etc"), "/etc",
    ]  # fmt: skip
    if etc is None:
        for hidden in _HIDDEN:
            if _readable(hidden, uid):
                argv += ["--ro-bind", "/dev/null", hidden]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in extra_ro:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    size = ["--size", str(tmpfs_size)] if tmpfs_size is not None else []
    argv += [
        "--proc", "/proc",
        *(["--dev-bind", str(dev), "/dev"] if dev else ["--dev", "/dev"]),
        *size, "--tmpfs", "/dev/shm",
        *size, "--tmpfs", "/run",
        *size, "--tmpfs", "/var",
        "--bind", str(workdir), str(SANDBOX_HOME),
        "--chdir", str(SANDBOX_HOME),
    ]  # fmt: skip
    for host, inside in binds:
        argv += ["--ro-bind", str(host), str(inside)]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    # bubblewrap's root is a tmpfs of its own, writable by the call and uncapped.
    argv += ["--remount-ro", "/", "--"]
    return argv


def _readable(path: str, uid: int | None) -> bool:
    """Whether a call running as ``uid`` (see :func:`bwrap_argv`) may read ``path``."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if uid is None:
        return os.access(path, os.R_OK)  # the call has this process's uid and groups
    if st.st_uid == uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid == uid:
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)


# The device nodes of bubblewrap's --dev, with their numbers, and its links.
_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
            "urandom": (1, 9), "tty": (5, 0)}  # fmt: skip
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
              "stderr": "/proc/self/fd/2", "core": "/proc/kcore"}  # fmt: skip


def prepare_dev(base: Path) -> Path | None:
    """Make a /dev for bubblewrap to bind in one mount; None where it cannot be made.

    bubblewrap's ``--dev`` builds a tmpfs with six device binds and a devpts
    per call, about 1.5 ms (it re-reads the mount table after each bind);
    one bind of this folder costs a fraction of that. It holds the same
    device nodes and links, an empty ``shm`` for the call's own tmpfs and
    no pseudo-terminals. Root-owned and read-only to calls; needs root (to
    make device nodes) and a filesystem that allows them (blocking).
    """
    if os.geteuid() != 0:
        return None
    dev = base / "dev"
    try:
        dev.mkdir(mode=0o755)
        for name, (major, minor) in _DEVICES.items():
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)  # past the umask
        for name, target in _DEV_LINKS.items():
            os.symlink(target, dev / name)
        (dev / "shm").mkdir(mode=0o755)
        with open(dev / "null", "wb") as null:  # a nodev filesystem refuses this
            null.write(b"")
    except OSError:
        shutil.rmtree(dev, ignore_errors=True)
        return None
    return dev


# What interpreters and their libraries read in /etc; the rest (the server's
# own config, secrets, keys, other services' settings) is not in a call's view.
ETC_ALLOWED = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version",
    "fonts", "gai.conf", "group", "host.conf", "hostname", "hosts", "inputrc", "java-*",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ld-musl-*", "locale.alias", "locale.conf",
    "localtime", "lsb-release", "magic", "magic.mime", "mime.types", "mtab", "netconfig",
    "networks", "nsswitch.conf", "os-release", "passwd", "perl", "php", "protocols", "python3",
    "python3.*", "resolv.conf", "rpc", "services", "ssl", "timezone",
)  # fmt: skip
_ETC_FOLLOW = ("hosts", "resolv.conf")  # often links into /run, which a call does not see


def prepare_etc(base: Path, source: Path = Path("/etc")) -> Path:
    """A copy of the parts of /etc that interpreters need, for bubblewrap to bind (blocking).

    Only entries named in :data:`ETC_ALLOWED`, and of those only what every
    user may read (a file of mode 0600 stays out); links are kept as links.
    Made once at start: an /etc changed later is seen after a restart.
    """
    etc = base / "etc"
    etc.mkdir(mode=0o755)
    for pattern in ETC_ALLOWED:
        for entry in sorted(source.glob(pattern)):
            follow = entry.name in _ETC_FOLLOW
            _copy_readable(entry, etc / entry.name, follow=follow)
    return etc


def _copy_readable(source: Path, target: Path, *, follow: bool = False) -> None:
    try:
        info = source.stat() if follow else source.lstat()
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISDIR(info.st_mode) and info.st_mode & 0o005 == 0o005:
        target.mkdir(mode=0o755)
        for child in sorted(source.iterdir()):
            _copy_readable(child, target / child.name)
    elif stat.S_ISREG(info.st_mode) and info.st_mode & 0o004:
        shutil.copyfile(source, target)
        os.chmod(target, 0o755 if info.st_mode & 0o001 else 0o644)


def find_bwrap() -> str | None:
    """The bwrap executable, or None."""
    return shutil.which("bwrap", path="/usr/local/bin:/usr/bin:/bin")


def check_bwrap(bwrap: str, uid: int | None, launcher: Path | None = None,
                dev: Path | None = None) -> str | None:  # fmt: skip
    """Run a probe under bubblewrap as ``uid``; None if it works, else why not (blocking).

    With ``launcher``, the probe runs through it as a call does, so
    bubblewrap's processes are reaped and none is left behind. With
    ``dev`` (see :func:`prepare_dev`), the probe also writes to /dev/null.
    """
    root = uid is not None and os.geteuid() == 0
    inner = bwrap_argv(bwrap, workdir=Path("/tmp"), binds=[], uid=uid if root else None, dev=dev)
    argv = [*inner, "/bin/sh", "-c", ": >/dev/null"]
    if launcher is not None:
        argv = [*Launch(launcher, uid=uid if root else None, status=False).argv(), *argv]
    elif root:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return "setpriv (util-linux) is missing"
        argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
    return None
