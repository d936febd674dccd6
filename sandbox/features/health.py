"""Health checks: one JSON entry per check; 200 when all pass, 500 when one fails.

Checks: each interpreter found at start is still there, every slot is free
or held by a running call (a lost slot would wedge the server), bubblewrap
still works (when it is the isolation), the queue is below its bound, and what
other parts add (each configured broker connected). Warm pools are listed
with their size and hit rate, the per-call cgroups (which version, or why
there are none), the seccomp filter, and whether calls get the launcher's
pid namespace (or its weaker fallback): informational, always ok, and
marked ``degraded`` when weaker than it should be.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..core.engine import Engine
from ..core.isolation import check_bwrap

Check = Callable[[], tuple[bool, str]]
BWRAP_CHECK_EVERY = 30.0


class Health:
    """The checks of one server; brokers and other parts add theirs with :meth:`add`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.extra: dict[str, Check] = {}
        self.draining = False
        self._bwrap: tuple[float, str | None] | None = None

    def add(self, name: str, check: Check) -> None:
        """Add a check: a callable giving (ok, detail)."""
        self.extra[name] = check

    def report(self) -> tuple[int, dict[str, Any]]:
        """Run every check (blocking but cheap: stats, and bwrap at most every 30 s)."""
        checks: dict[str, dict[str, Any]] = {}
        registry = self.engine.registry
        for lang in registry:
            found = registry.installed(lang)
            name = f"interpreter:{lang.name}"
            if found.path is None:
                detail = f"not installed (apt-get install {lang.package})"
                checks[name] = {"ok": True, "detail": detail, "required": False}
            elif os.access(found.path, os.X_OK):
                checks[name] = {"ok": True, "detail": f"{found.version} at {found.path}"}
            else:
                detail = f"{found.path} is gone (was {found.version} at start)"
                checks[name] = {"ok": False, "detail": detail}
        ok, detail = self.engine.slots_check()
        checks["slots"] = {"ok": ok, "detail": detail}
        checks["isolation"] = self._isolation()
        checks["cgroups"] = {"ok": True, "detail": self.engine.cgroup_detail}
        if self.engine.cgroups is None:
            checks["cgroups"]["degraded"] = True
        checks["seccomp"] = (
            {"ok": True, "detail": "every call under a seccomp deny-list (docs/SECURITY.md)"}
            if self.engine.seccomp
            else {"ok": True, "detail": "no seccomp filter on calls", "degraded": True}
        )
        fallback = self.engine.pidns_fallback
        checks["pidns"] = (
            {"ok": True, "detail": f"fallback: {fallback}", "degraded": True}
            if fallback
            else {"ok": True, "detail": "every call in a pid namespace of its own"}
        )
        stats = self.engine.statistics()
        queue_ok = stats.queued < stats.max_queue or stats.max_queue == 0
        checks["queue"] = {"ok": queue_ok,
                           "detail": f"{stats.running}/{stats.max_running} running, "
                                     f"{stats.queued}/{stats.max_queue} queued"}  # fmt: skip
        for pool in self.engine.pool_stats(poll=False):  # in a worker thread
            checks[f"warm:{pool.key}"] = {
                "ok": True,
                "detail": f"{pool.ready}/{pool.size} {pool.language} ready, {pool.hits} hits, "
                f"{pool.early} early, {pool.misses} misses ({pool.hit_rate:.0%})",
            }
        for name, check in self.extra.items():
            try:
                ok, detail = check()
            except Exception as exc:  # a check must not break the health page
                ok, detail = False, f"check failed: {exc}"
            checks[name] = {"ok": ok, "detail": detail}
        healthy = all(c["ok"] for c in checks.values())
        return (200 if healthy else 500), {"status": "ok" if healthy else "fail", "checks": checks}

    def _isolation(self) -> dict[str, Any]:
        engine = self.engine
        if engine.isolation != "bwrap":
            return {"ok": True, "detail": "none: scripts are not sandboxed (trusted code only)"}
        now = time.monotonic()
        if self._bwrap is None or now - self._bwrap[0] > BWRAP_CHECK_EVERY:
            problem = (
                "bwrap is gone"
                if engine.bwrap is None or not os.access(engine.bwrap, os.X_OK)
                else check_bwrap(
                    engine.bwrap,
                    engine.config.uid_base if engine.root else None,
                    engine.launcher,
                    engine.dev,
                )
            )
            self._bwrap = (now, problem)
        problem = self._bwrap[1]
        return {"ok": problem is None, "detail": problem or f"bwrap works ({engine.bwrap})"}
