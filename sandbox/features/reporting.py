"""Reporting webhooks, as Exo's: ``STACK_REPORTING_URL`` + /heartbeat, /success, /error.

Details travel as query parameters of a GET, for example
``/success?action=hello&duration=0.042``. Reports go out from one task that
lives as long as the server; a report that cannot be delivered is logged and
dropped, it never fails or delays a call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import httpx
import trio

log = logging.getLogger("stack")
HEARTBEAT = 60.0


class Reporter:
    """Sends reports to ``url`` (or nowhere when it is None)."""

    def __init__(self, url: str | None, *, heartbeat: float = HEARTBEAT) -> None:
        self.url = url.rstrip("/") if url else None
        self.heartbeat = heartbeat
        self._send, self._receive = trio.open_memory_channel[tuple[str, dict[str, str]]](1000)

    def report(self, kind: str, **details: object) -> None:
        """Queue a report (``success``, ``error`` or ``heartbeat``); never blocks."""
        if self.url is None:
            return
        params = {k: str(v) for k, v in details.items() if v is not None}
        try:
            self._send.send_nowait((kind, params))
        except trio.WouldBlock:
            log.warning("reporting: queue full, dropped a %s report", kind)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued reports and a heartbeat every ``heartbeat`` seconds until cancelled."""
        task_status.started()
        if self.url is None:
            await trio.sleep_forever()
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            nursery.start_soon(self._beat)
            async for kind, params in self._receive:
                await self._deliver(client, kind, params)

    async def _beat(self) -> None:
        while True:
            self.report("heartbeat")
            await trio.sleep(self.heartbeat if self.heartbeat > 0 else math.inf)

    async def _deliver(self, client: httpx.AsyncClient, kind: str,
                       params: Mapping[str, str]) -> None:  # fmt: skip
        try:
            response = await client.get(f"{self.url}/{kind}", params=dict(params))
            if response.status_code >= 400:
                log.warning("reporting: %s/%s answered %d", self.url, kind, response.status_code)
        except httpx.HTTPError as exc:
            log.warning("reporting: %s/%s failed: %s", self.url, kind, exc)

    async def flush(self, client: httpx.AsyncClient | None = None) -> None:
        """Deliver what is queued now (for one-shot commands)."""
        if self.url is None:
            return
        async with httpx.AsyncClient(timeout=10) as own:
            while True:
                try:
                    kind, params = self._receive.receive_nowait()
                except trio.WouldBlock:
                    return
                await self._deliver(client or own, kind, params)
