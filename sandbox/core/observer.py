"""What the engine tells whoever watches it: calls ended, refused, served warm.

The core counts nothing itself: a front door (Prometheus metrics, a log, a
test) implements :class:`Observer` and registers it with
:meth:`~sandbox.core.engine.Engine.observe`. Observers are called in the
event loop, on the call's path: they must not block.
"""

from __future__ import annotations

from typing import Literal, Protocol

from .process import Outcome

WarmUse = Literal["hit", "early", "miss"]
"""How a call of a warm pool was served: a loaded process, one still loading, or cold."""


class Observer(Protocol):
    """Receives the engine's events."""

    def call_ended(self, door: str, language: str, outcome: Outcome) -> None:
        """A call finished (whatever ended it); ``door`` is the Invocation's label."""

    def call_refused(self) -> None:
        """A call was refused: every slot busy and the queue full."""

    def warm_served(self, language: str, use: WarmUse) -> None:
        """A call of a warm pool started: from a waiting process, or cold."""
