"""The user's path where a program's messages name its copy in the sandbox.

A script runs from a staged copy: ``/stack/script/NAME``,
``/stack/code/.../NAME`` or ``/tmp/NAME`` under bubblewrap, the call's
folder (``.../calls/cN/NAME``) or the server's otherwise. A traceback or a
compiler error naming one of those means the user's file, so that is what
the user is shown. Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class UserPaths:
    """Rewrites sandbox paths of one file to the path the user knows it by.

    Args:
        name: the file's name in the sandbox (its base name).
        shown: what to show instead (the path as the user gave it).
        also: other exact paths of the same file (a staged copy).
    """

    def __init__(self, name: str, shown: str, also: Iterable[str] = ()) -> None:
        quoted = re.escape(name.encode())
        prefixes = [
            rb"/tmp",
            rb"/stack/script",
            rb"/stack/code(?:/[^\s:'\"/]+)*",  # a folder's code, bound whole under bwrap
            rb"/[^\s:'\"]*(?:stack-calls-[^/\s]+|/calls)/c\d+",
        ]
        exact = [re.escape(path.encode()) for path in also]
        self._pattern = re.compile(
            rb"(?:" + rb"|".join([*exact, *(p + rb"/" + quoted for p in prefixes)]) + rb")"
            rb"(?![\w.-])"
        )
        self._shown = shown.encode()
        self._partial = b""

    def rewrite(self, data: bytes) -> bytes:
        """``data`` with every sandbox path of the file replaced."""
        return self._pattern.sub(lambda _: self._shown, data)

    def text(self, data: str) -> str:
        """:meth:`rewrite` for text."""
        return self.rewrite(data.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def feed(self, data: bytes) -> bytes:
        """The complete lines so far, rewritten; a partial last line is held."""
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return self.rewrite(data[:cut])

    def flush(self) -> bytes:
        """What :meth:`feed` still holds, rewritten."""
        data, self._partial = self._partial, b""
        return self.rewrite(data)
