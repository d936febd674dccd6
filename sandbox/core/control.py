"""Response control: fd 3 messages and CGI headers, turned into a response head.

Sans-IO: bytes in, state and events out. See docs/ARCHITECTURE.md for the
message table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 64 * 1024
MAX_CGI_HEAD = 64 * 1024
MAX_CONTROL_BYTES = 16 * 1024 * 1024
"""fd 3 bytes read per call; past it the call is ended (an ``output`` outcome)."""
MAX_HEADERS = 100
"""Header values in one response head."""
MAX_HEAD_BYTES = 64 * 1024
"""Bytes of header names and values in one response head."""
MAX_EVENTS = 1000
"""Log and invalid messages reported per call; past it they are counted, not reported."""
MAX_EVENT_BYTES = 256 * 1024
"""Bytes of log and invalid messages reported per call."""
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
    "trailer", "content-length",
}  # fmt: skip


@dataclass(frozen=True)
class Head:
    """The status line and headers of a response.

    ``headers`` keeps each name as the script wrote it; lookups fold case.
    """

    status: int = 200
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass
class HeadBuilder:
    """Collects status and headers until the head is sent."""

    status: int = 200
    reason: str | None = None
    _headers: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def set_header(self, name: str, value: Any) -> None:
        """Set a header (a list value gives several); raises ValueError if invalid."""
        self._headers[name.lower()] = (name, check_header(name, value))

    def add_header(self, name: str, value: str) -> None:
        """Add one more value to a header; raises ValueError if invalid."""
        values = check_header(name, value)
        if name.lower() in self._headers:
            self._headers[name.lower()][1].extend(values)
        else:
            self._headers[name.lower()] = (name, values)

    def set_reason(self, reason: Any) -> None:
        """Set the reason phrase; raises ValueError if invalid."""
        text = _header_text(reason)
        if not _valid_value(text):
            raise ValueError(f"invalid status message {text[:80]!r}")
        self.reason = text

    def remove_header(self, name: str) -> None:
        self._headers.pop(name.lower(), None)

    def set_status(self, code: Any) -> None:
        """Set the status; 200-999 (an informational 1xx cannot be the final status)."""
        if isinstance(code, bool) or not isinstance(code, int | str):
            raise ValueError(f"invalid status code {code!r}")
        try:
            status = int(code)
        except ValueError:
            raise ValueError(f"invalid status code {code!r}") from None
        if not 200 <= status <= 999:
            raise ValueError(f"invalid status code {code!r}: use 200 to 999")
        self.status = status

    def build(self) -> Head:
        headers = tuple((name, v) for name, values in self._headers.values() for v in values)
        return Head(self.status, self.reason, headers)

    def size(self) -> tuple[int, int]:
        """``(header values, bytes of names and values)`` of the head so far."""
        count = size = 0
        for name, values in self._headers.values():
            count += len(values)
            size += sum(len(name) + len(v) + 4 for v in values)
        return count, size + len(self.reason or "")


def check_header(name: str, value: Any) -> list[str]:
    """The text values of a header, or ValueError saying why it cannot be sent."""
    if not _valid_header(name):
        raise ValueError(f"invalid header name {name!r}")
    if name.lower() in _HOP_BY_HOP:
        raise ValueError(f"header {name!r} is managed by the server")
    values = [_header_text(v) for v in value] if isinstance(value, list) else [_header_text(value)]
    for text in values:
        if not _valid_value(text):
            raise ValueError(f"invalid value for header {name!r}: {text[:80]!r}")
    return values


def _header_text(value: Any) -> str:
    # As Node does: true -> "true", 3 -> "3"; objects and null are refused.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    raise ValueError(f"a header value must be a string or a number, not {value!r}")


def _valid_header(name: str) -> bool:
    return bool(name) and all(33 <= ord(c) <= 126 and c not in '()<>@,;:\\"/[]?={}' for c in name)


def _valid_value(value: str) -> bool:
    if "\r" in value or "\n" in value or "\0" in value:
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Event:
    """Something a control message asks for beyond shaping the head.

    ``kind`` is ``"log"`` (text in ``text``), ``"error"`` (the script failed the
    call: ``text`` and ``code``), ``"end"`` (the body is complete), or
    ``"invalid"`` (a message that was ignored; ``text`` says why).
    """

    kind: str
    text: str = ""
    code: str | None = None


class Control:
    """Parses fd 3 lines into a :class:`HeadBuilder` and events.

    After :meth:`freeze` (the head was sent), head-changing messages are
    reported as ``invalid`` events and do nothing.

    Bounded like stdout, since a hostile script writes here too: past
    :data:`MAX_CONTROL_BYTES` read, or a head over :data:`MAX_HEADERS` values
    or :data:`MAX_HEAD_BYTES`, :attr:`overflow` says why and the rest is
    ignored (the caller ends the call); past :data:`MAX_EVENTS` or
    :data:`MAX_EVENT_BYTES` of log and invalid events, they are only counted
    (:attr:`dropped`).
    """

    def __init__(self, max_bytes: int = MAX_CONTROL_BYTES) -> None:
        self.head = HeadBuilder()
        self.frozen = False
        self.error: Event | None = None
        self.ended = False
        self.overflow: str | None = None
        self.dropped = 0
        self.max_bytes = max_bytes
        self._read = 0
        self._reported = 0
        self._reported_bytes = 0
        self._buffer = b""
        self._skipping = False

    def freeze(self) -> Head:
        """Stop accepting head changes and return the head to send."""
        self.frozen = True
        return self.head.build()

    def feed(self, data: bytes) -> list[Event]:
        """Take bytes read from fd 3; return the events of every complete line."""
        if self.overflow is not None:
            return []
        self._read += len(data)
        if self._read > self.max_bytes:
            self.overflow = f"the script wrote more than {self.max_bytes} bytes on fd 3"
            self._buffer = b""
            return []
        events: list[Event] = []
        # One split per read, not one copy of the rest per line: a read full
        # of newlines costs what it holds, not its square.
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()  # what follows the last newline: not a line yet
        for line in lines:
            if self._skipping:  # the end of a line that was already too long
                self._skipping = False
                continue
            if len(line) > MAX_LINE:
                events.append(Event("invalid", f"control line over {MAX_LINE} bytes"))
                continue
            if line.strip():
                events.extend(self._message(line))
            if self.overflow is not None:
                self._buffer = b""
                break
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            if not self._skipping:
                events.append(Event("invalid", f"control line over {MAX_LINE} bytes"))
            self._skipping = True
        return self._within_budget(events)

    def close(self) -> list[Event]:
        """End of fd 3: a last line without a newline still counts."""
        data, self._buffer = self._buffer, b""
        events = []
        if data.strip() and not self._skipping and self.overflow is None:
            events = self._within_budget(self._message(data))
        if self.dropped:
            events.append(Event("invalid", f"{self.dropped} log or invalid control messages "
                                           f"were dropped (over {MAX_EVENTS} or "
                                           f"{MAX_EVENT_BYTES} bytes per call)"))  # fmt: skip
        return events

    def _within_budget(self, events: list[Event]) -> list[Event]:
        kept = []
        for event in events:
            if event.kind in ("log", "invalid"):
                self._reported += 1
                self._reported_bytes += len(event.text)
                if self._reported > MAX_EVENTS or self._reported_bytes > MAX_EVENT_BYTES:
                    self.dropped += 1
                    continue
            kept.append(event)
        return kept

    def _message(self, line: bytes) -> list[Event]:
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return [Event("invalid", f"control message is not JSON: {line[:80]!r}")]
        except RecursionError:
            return [Event("invalid", "control message nested too deeply")]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [Event("invalid", "control message needs a string 'type'")]
        kind = message["type"]
        payload = message.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        try:
            return self._apply(kind, payload)
        except (ValueError, TypeError, KeyError) as exc:
            return [Event("invalid", f"control message {kind!r}: {exc}")]

    def _apply(self, kind: str, payload: dict[str, Any]) -> list[Event]:
        if kind == "log":
            entry = payload.get("entry", payload.get("value", ""))
            text = entry if isinstance(entry, str) else json.dumps(entry)
            return [Event("log", text)]
        if kind == "end":
            self.ended = True
            return [Event("end")]
        if kind == "ready":
            return []  # a warm prelude finished loading (see sandbox/warm.py)
        if kind == "error":
            error = payload.get("error", "the script reported an error")
            code = payload.get("code")
            event = Event("error", error if isinstance(error, str) else json.dumps(error),
                          None if code is None else str(code))  # fmt: skip
            if self.error is None:
                self.error = event
            return [event]
        if kind not in ("writeHead", "statusCode", "statusMessage", "setHeader", "removeHeader"):
            return [Event("invalid", f"unknown control message type {kind!r}")]
        if self.frozen:
            return [Event("invalid", f"{kind} after the body started is ignored")]
        before = self.head.status, self.head.reason, dict(self.head._headers)
        events = self._apply_head(kind, payload)
        count, size = self.head.size()
        if count > MAX_HEADERS or size > MAX_HEAD_BYTES:
            self.head.status, self.head.reason, self.head._headers = before
            self.overflow = (
                f"the response head went over its limit of {MAX_HEADERS} header values "
                f"or {MAX_HEAD_BYTES} bytes"
            )
        return events

    def _apply_head(self, kind: str, payload: dict[str, Any]) -> list[Event]:
        if kind == "writeHead":
            # All or nothing: check everything on a copy first.
            trial = HeadBuilder(self.head.status, self.head.reason, dict(self.head._headers))
            trial.set_status(payload["code"])
            if payload.get("reason") is not None:
                trial.set_reason(payload["reason"])
            headers = payload.get("headers") or {}
            if not isinstance(headers, dict):
                raise TypeError("headers must be an object")
            for name, value in headers.items():
                trial.set_header(str(name), value)
            self.head.status, self.head.reason = trial.status, trial.reason
            self.head._headers = trial._headers
        elif kind == "statusCode":
            self.head.set_status(payload.get("value", payload.get("code")))
        elif kind == "statusMessage":
            self.head.set_reason(payload["value"])
        elif kind == "setHeader":
            self.head.set_header(str(payload["name"]), payload["value"])
        else:
            self.head.remove_header(str(payload["name"]))
        return []


class CGIHead:
    """Reads ``Status:`` and headers from the top of stdout (CGI mode).

    Feed stdout bytes until :attr:`done`; the bytes after the blank line are
    returned as the start of the body.
    """

    def __init__(self, head: HeadBuilder) -> None:
        self.head = head
        self.done = False
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        """Take stdout bytes; once the header block ended, return the body bytes."""
        if self.done:
            raise ValueError("the CGI head is complete: feed the body elsewhere")
        self._buffer += data
        found = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := self._buffer.find(sep)) >= 0]
        if found:
            index, sep = min(found)
            block, body = self._buffer[:index], self._buffer[index + len(sep) :]
            self._parse(block)
            self.done = True
            self._buffer = b""
            return body
        if len(self._buffer) > MAX_CGI_HEAD:
            raise ValueError(f"CGI header block over {MAX_CGI_HEAD} bytes without a blank line")
        return b""

    def finish(self) -> bytes:
        """stdout ended: a header block with no blank line is taken as headers only."""
        if self.done:
            return b""
        data, self._buffer = self._buffer, b""
        self.done = True
        self._parse(data.rstrip(b"\r\n"))
        return b""

    def _parse(self, block: bytes) -> None:
        for raw in block.replace(b"\r\n", b"\n").split(b"\n"):
            if not raw.strip():
                continue
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise ValueError(f"bad CGI header line {raw[:80]!r}")
            name, value = name.strip(), value.strip(" \t")
            if name.lower() in _HOP_BY_HOP:
                continue  # framing is the server's job (CGI scripts often send these)
            if name.lower() == "status":
                code, _, reason = value.partition(" ")
                self.head.set_status(code)
                if reason:
                    self.head.set_reason(reason)
            elif name.lower() == "location" and self.head.status == 200:
                self.head.set_status(302)
                self.head.set_header(name, value)
            else:
                self.head.add_header(name, value)
