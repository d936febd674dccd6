"""Response control (sandbox/control.py): fd 3 messages and CGI headers, sans-IO.

Plain functions over bytes: no event loop, no processes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.core.control import (
    MAX_CGI_HEAD,
    MAX_EVENTS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    CGIHead,
    Control,
    Event,
    Head,
    HeadBuilder,
)


def msg(kind: str, payload: Any = None) -> bytes:
    """One fd 3 line, as a prelude writes it."""
    message: dict[str, Any] = {"type": kind}
    if payload is not None:
        message["payload"] = payload
    return json.dumps(message).encode() + b"\n"


def fed(*lines: bytes) -> tuple[Control, list[Event]]:
    """A Control fed ``lines`` in one go, and the events it returned."""
    control = Control()
    return control, control.feed(b"".join(lines))


def kinds(events: list[Event]) -> list[str]:
    return [event.kind for event in events]


# -- head-shaping messages ----------------------------------------------------


def test_a_fresh_control_sends_200_with_no_headers() -> None:
    assert Control().freeze() == Head(200, None, ())


def test_write_head_sets_status_and_headers() -> None:
    control, events = fed(
        msg("writeHead", {"code": 201, "headers": {"X-A": "1", "Content-Type": "text/html"}})
    )
    assert events == []
    head = control.freeze()
    assert head.status == 201
    assert head.headers == (("X-A", "1"), ("Content-Type", "text/html"))
    assert head.get("content-type") == "text/html"


def test_write_head_takes_a_reason() -> None:
    control, events = fed(msg("writeHead", {"code": 418, "reason": "Teapot"}))
    assert events == []
    assert control.freeze() == Head(418, "Teapot", ())


def test_write_head_numbers_become_strings() -> None:
    control, _ = fed(msg("writeHead", {"code": "202", "headers": {"X-Count": 3}}))
    head = control.freeze()
    assert head.status == 202
    assert head.headers == (("X-Count", "3"),)


def test_status_code_sets_the_status() -> None:
    control, events = fed(msg("statusCode", {"value": 404}))
    assert events == []
    assert control.freeze().status == 404


def test_status_code_also_accepts_code() -> None:
    control, _ = fed(msg("statusCode", {"code": 503}))
    assert control.freeze().status == 503


def test_status_message_sets_the_reason() -> None:
    control, events = fed(
        msg("statusCode", {"value": 418}), msg("statusMessage", {"value": "Teapot"})
    )
    assert events == []
    assert control.freeze() == Head(418, "Teapot", ())


def test_set_header_keeps_the_name_as_written() -> None:
    control, events = fed(msg("setHeader", {"name": "X-Thing", "value": "a b"}))
    assert events == []
    head = control.freeze()
    assert head.headers == (("X-Thing", "a b"),)
    assert head.get("x-thing") == "a b"
    assert head.get("X-THING") == "a b"


def test_set_header_with_a_list_sends_each_value() -> None:
    control, _ = fed(msg("setHeader", {"name": "Set-Cookie", "value": ["a=1", "b=2"]}))
    assert control.freeze().headers == (("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))


def test_set_header_replaces_whatever_case_the_name_had() -> None:
    control, _ = fed(
        msg("setHeader", {"name": "x-a", "value": "1"}),
        msg("setHeader", {"name": "X-A", "value": "2"}),
    )
    assert control.freeze().headers == (("X-A", "2"),)


def test_set_header_stringifies_json_values_as_json() -> None:
    """A JSON ``true`` is the header value ``true``, as Node sends it (not Python's ``True``)."""
    control, events = fed(
        msg("setHeader", {"name": "X-Flag", "value": True}),
        msg("setHeader", {"name": "X-Ratio", "value": 1.5}),
    )
    assert events == []
    assert control.freeze().headers == (("X-Flag", "true"), ("X-Ratio", "1.5"))


def test_set_header_with_an_object_value_is_invalid() -> None:
    """An object has no header form; it must not become a Python repr like ``{'a': 1}``."""
    control, events = fed(msg("setHeader", {"name": "X-Obj", "value": {"a": 1}}))
    assert kinds(events) == ["invalid"]
    assert control.freeze().headers == ()


def test_remove_header_is_case_insensitive() -> None:
    control, events = fed(
        msg("setHeader", {"name": "X-Powered-By", "value": "me"}),
        msg("setHeader", {"name": "X-Keep", "value": "1"}),
        msg("removeHeader", {"name": "x-powered-by"}),
    )
    assert events == []
    assert control.freeze().headers == (("X-Keep", "1"),)


def test_remove_header_of_a_missing_header_does_nothing() -> None:
    control, events = fed(msg("removeHeader", {"name": "X-Nope"}))
    assert events == []
    assert control.freeze() == Head()


# -- events -------------------------------------------------------------------


def test_log_gives_a_log_event() -> None:
    control, events = fed(msg("log", {"entry": "hello there"}))
    assert events == [Event("log", "hello there")]
    assert control.freeze() == Head()


def test_log_of_a_non_string_is_its_json() -> None:
    _, events = fed(msg("log", {"entry": {"a": [1, 2]}}))
    assert events == [Event("log", '{"a": [1, 2]}')]


def test_error_gives_an_error_event_and_is_remembered() -> None:
    control, events = fed(msg("error", {"error": "db down", "code": 42}))
    assert events == [Event("error", "db down", "42")]
    assert control.error == Event("error", "db down", "42")


def test_error_without_a_message_says_the_script_reported_one() -> None:
    control, events = fed(msg("error"))
    assert events == [Event("error", "the script reported an error", None)]


def test_the_first_error_is_the_one_kept() -> None:
    control, events = fed(msg("error", {"error": "first"}), msg("error", {"error": "second"}))
    assert kinds(events) == ["error", "error"]
    assert control.error is not None
    assert control.error.text == "first"


def test_end_marks_the_body_complete() -> None:
    control, events = fed(msg("end"))
    assert events == [Event("end")]
    assert control.ended is True


# -- invalid messages change nothing ------------------------------------------


def shaped() -> Control:
    """A control with a status and a header already set, to see that bad lines leave them."""
    control = Control()
    assert (
        control.feed(
            msg("statusCode", {"value": 201}) + msg("setHeader", {"name": "X-Kept", "value": "yes"})
        )
        == []
    )
    return control


KEPT = Head(201, None, (("X-Kept", "yes"),))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json\n", "control message is not JSON: b'not json'"),
        (b"{broken\n", "control message is not JSON"),
        (b'"just a string"\n', "control message needs a string 'type'"),
        (b"[1, 2]\n", "control message needs a string 'type'"),
        (b'{"payload": {"value": 500}}\n', "control message needs a string 'type'"),
        (b'{"type": 7}\n', "control message needs a string 'type'"),
        (b'{"type": "explode", "payload": {}}\n', "unknown control message type 'explode'"),
        (b"\xff\xfe\xfa garbage\n", "control message is not JSON"),
    ],
)
def test_malformed_lines_are_invalid(line: bytes, why: str) -> None:
    control = shaped()
    events = control.feed(line)
    assert kinds(events) == ["invalid"]
    assert why in events[0].text
    assert control.freeze() == KEPT


@pytest.mark.parametrize(
    "payload",
    [
        {"value": "abc"},
        {"value": None},
        {"value": 99},
        {"value": 1000},
        {"value": 101},
        {},
    ],
)
def test_bad_status_codes_are_invalid(payload: dict[str, Any]) -> None:
    control = shaped()
    events = control.feed(msg("statusCode", payload))
    assert kinds(events) == ["invalid"]
    assert events[0].text.startswith("control message 'statusCode':")
    assert control.freeze() == KEPT


@pytest.mark.parametrize("code", [100, 102, 103, 199])
def test_informational_status_codes_are_invalid_as_a_final_status(code: int) -> None:
    """A 1xx is not a final response: h11 and h2 refuse to send it as the head."""
    control = shaped()
    events = control.feed(msg("statusCode", {"value": code}))
    assert kinds(events) == ["invalid"]
    assert control.freeze() == KEPT


def test_write_head_without_a_code_is_invalid() -> None:
    control = shaped()
    events = control.feed(msg("writeHead", {"headers": {"X-B": "2"}}))
    assert kinds(events) == ["invalid"]
    assert control.freeze() == KEPT


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Evil", "a\r\nSet-Cookie: session=stolen"),
        ("X-Evil", "a\nb"),
        ("X-Evil", "a\rb"),
        ("X-Evil", "a\0b"),
        ("X-Evil", ["fine", "bad\r\nX-Injected: 1"]),
        ("X-Evil\r\nX-Injected", "1"),
        ("Bad Name", "1"),
        ("Bad:Name", "1"),
        ("", "1"),
    ],
)
def test_header_injection_is_invalid(name: str, value: Any) -> None:
    control = shaped()
    events = control.feed(msg("setHeader", {"name": name, "value": value}))
    assert kinds(events) == ["invalid"]
    assert events[0].text.startswith("control message 'setHeader': invalid")
    assert control.freeze() == KEPT


@pytest.mark.parametrize(
    "name",
    ["Transfer-Encoding", "content-length", "Connection", "Keep-Alive", "Upgrade", "TE", "Trailer"],
)
def test_hop_by_hop_headers_are_invalid(name: str) -> None:
    control = shaped()
    events = control.feed(msg("setHeader", {"name": name, "value": "chunked"}))
    assert events == [
        Event("invalid", f"control message 'setHeader': header {name!r} is managed by the server")
    ]
    assert control.freeze() == KEPT


def test_write_head_with_a_bad_header_changes_nothing() -> None:
    """A rejected writeHead must not leave its status or its earlier headers behind."""
    control = shaped()
    events = control.feed(
        msg("writeHead", {"code": 500, "headers": {"X-New": "1", "Transfer-Encoding": "chunked"}})
    )
    assert kinds(events) == ["invalid"]
    assert "'Transfer-Encoding' is managed by the server" in events[0].text
    assert control.freeze() == KEPT


def test_write_head_with_headers_not_an_object_is_invalid() -> None:
    control = shaped()
    events = control.feed(msg("writeHead", {"code": 200, "headers": ["X-A", "1"]}))
    assert kinds(events) == ["invalid"]
    assert "headers must be an object" in events[0].text
    assert control.freeze().headers == KEPT.headers


def test_status_message_with_cr_lf_is_invalid() -> None:
    """The reason phrase goes on the status line: CR/LF there would inject headers."""
    control = shaped()
    events = control.feed(msg("statusMessage", {"value": "OK\r\nSet-Cookie: session=stolen"}))
    assert kinds(events) == ["invalid"]
    assert control.freeze() == KEPT


def test_header_values_the_server_cannot_send_are_invalid() -> None:
    """asgi.py sends header values encoded as latin-1; a value outside it must be refused here."""
    control = shaped()
    events = control.feed(msg("setHeader", {"name": "X-Price", "value": "5 \u20ac"}))
    head = control.freeze()
    for name, value in head.headers:
        name.encode("latin-1")
        value.encode("latin-1")
    assert kinds(events) == ["invalid"]
    assert head == KEPT


# -- framing ------------------------------------------------------------------


def test_blank_lines_are_ignored() -> None:
    _, events = fed(b"\n  \n", msg("log", {"entry": "x"}), b"\r\n")
    assert events == [Event("log", "x")]


def test_crlf_line_endings_are_accepted() -> None:
    _, events = fed(msg("log", {"entry": "x"}).replace(b"\n", b"\r\n"))
    assert events == [Event("log", "x")]


def test_a_line_split_across_feeds_is_read_once_complete() -> None:
    control = Control()
    line = msg("setHeader", {"name": "X-A", "value": "1"}) + msg("log", {"entry": "hi"})
    events: list[Event] = []
    for index in range(len(line)):
        events += control.feed(line[index : index + 1])
    assert events == [Event("log", "hi")]
    assert control.freeze().headers == (("X-A", "1"),)


def test_partial_line_waits_for_its_newline() -> None:
    control = Control()
    line = msg("statusCode", {"value": 404})
    assert control.feed(line[:10]) == []
    assert control.head.status == 200
    assert control.feed(line[10:]) == []
    assert control.head.status == 404


def test_close_reads_a_last_line_without_a_newline() -> None:
    control = Control()
    assert control.feed(msg("log", {"entry": "a"}) + msg("end").rstrip(b"\n")) == [
        Event("log", "a")
    ]
    assert control.ended is False
    assert control.close() == [Event("end")]
    assert control.ended is True


def test_close_with_nothing_left_gives_nothing() -> None:
    control = Control()
    control.feed(msg("log", {"entry": "a"}))
    assert control.close() == []


def test_close_with_a_broken_last_line_says_so() -> None:
    control = Control()
    control.feed(b'{"type": "log"')
    events = control.close()
    assert kinds(events) == ["invalid"]
    assert "not JSON" in events[0].text


def test_an_over_long_line_is_skipped_and_the_next_one_read() -> None:
    control = Control()
    long_line = msg("setHeader", {"name": "X-Big", "value": "x" * (2 * MAX_LINE)})
    events = control.feed(long_line[:4096])
    for start in range(4096, len(long_line), 4096):
        events += control.feed(long_line[start : start + 4096])
    events += control.feed(msg("log", {"entry": "after"}))
    assert events == [
        Event("invalid", f"control line over {MAX_LINE} bytes"),
        Event("log", "after"),
    ]
    assert control.freeze().headers == ()


def test_an_over_long_line_is_skipped_however_the_reads_split_it() -> None:
    """A pipe read can hand the whole line over at once; the limit must not depend on that."""
    control = Control()
    long_line = msg("setHeader", {"name": "X-Big", "value": "x" * (MAX_LINE + 100)})
    events = control.feed(long_line + msg("log", {"entry": "after"}))
    assert events == [
        Event("invalid", f"control line over {MAX_LINE} bytes"),
        Event("log", "after"),
    ]
    assert control.freeze().headers == ()


def test_the_tail_of_an_over_long_line_is_not_read_at_close() -> None:
    control = Control()
    events = control.feed(b"x" * (MAX_LINE + 1))
    assert kinds(events) == ["invalid"]
    control.feed(b'"tail without newline"')
    assert control.close() == []


# -- after the head was sent --------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("writeHead", {"code": 500, "headers": {"X-Late": "1"}}),
        ("statusCode", {"value": 500}),
        ("statusMessage", {"value": "Late"}),
        ("setHeader", {"name": "X-Late", "value": "1"}),
        ("removeHeader", {"name": "X-Kept"}),
    ],
)
def test_head_changes_after_freeze_are_ignored(kind: str, payload: dict[str, Any]) -> None:
    control = shaped()
    sent = control.freeze()
    events = control.feed(msg(kind, payload))
    assert events == [Event("invalid", f"{kind} after the body started is ignored")]
    assert control.freeze() == sent == KEPT


def test_log_error_and_end_still_work_after_freeze() -> None:
    control = shaped()
    control.freeze()
    events = control.feed(msg("log", {"entry": "late"}) + msg("error", {"error": "x"}) + msg("end"))
    assert events == [Event("log", "late"), Event("error", "x"), Event("end")]
    assert control.ended is True


# -- CGI headers on stdout ----------------------------------------------------


def cgi() -> tuple[HeadBuilder, CGIHead]:
    builder = HeadBuilder()
    return builder, CGIHead(builder)


def test_cgi_status_line_with_reason() -> None:
    builder, head = cgi()
    body = head.feed(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nmissing")
    assert head.done is True
    assert body == b"missing"
    assert builder.build() == Head(404, "Not Found", (("Content-Type", "text/plain"),))


def test_cgi_status_without_reason() -> None:
    builder, head = cgi()
    head.feed(b"Status: 201\n\n")
    assert builder.build() == Head(201, None, ())


def test_cgi_lf_separators() -> None:
    builder, head = cgi()
    body = head.feed(b"Content-Type: text/html\nX-A: 1\n\n<p>hi</p>\n")
    assert body == b"<p>hi</p>\n"
    assert builder.build().headers == (("Content-Type", "text/html"), ("X-A", "1"))


def test_cgi_location_means_302() -> None:
    builder, head = cgi()
    head.feed(b"Location: /elsewhere\r\n\r\n")
    assert builder.build() == Head(302, None, (("Location", "/elsewhere"),))


def test_cgi_location_keeps_an_explicit_status() -> None:
    builder, head = cgi()
    head.feed(b"Status: 301 Moved Permanently\nLocation: /new\n\n")
    assert builder.build() == Head(301, "Moved Permanently", (("Location", "/new"),))


def test_cgi_repeated_headers_are_all_sent() -> None:
    builder, head = cgi()
    head.feed(b"Set-Cookie: a=1\nSet-Cookie: b=2\n\n")
    assert builder.build().headers == (("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))


def test_cgi_header_block_split_across_feeds() -> None:
    data = b"Status: 202 Accepted\r\nX-A: 1\r\n\r\nbody bytes"
    end = data.index(b"\r\n\r\n") + 4
    for split in range(1, len(data)):
        builder, head = cgi()
        out = head.feed(data[:split])
        assert head.done is (split >= end)
        # Once the head is done the caller passes stdout through as body.
        out += head.feed(data[split:]) if not head.done else data[split:]
        assert head.done is True
        assert out == b"body bytes"
        assert builder.build() == Head(202, "Accepted", (("X-A", "1"),))


def test_cgi_body_bytes_come_back_with_the_blank_line() -> None:
    builder, head = cgi()
    assert head.feed(b"X-A: 1\r\n") == b""
    assert head.feed(b"\r\nhello\r\n\r\nworld") == b"hello\r\n\r\nworld"
    assert builder.build().headers == (("X-A", "1"),)


def test_cgi_lf_head_with_crlf_crlf_in_the_body() -> None:
    """The header block ends at the first blank line, whichever line ending the body uses."""
    builder, head = cgi()
    body = head.feed(b"Content-Type: text/plain\n\nline one\r\n\r\nline two")
    assert body == b"line one\r\n\r\nline two"
    assert builder.build().headers == (("Content-Type", "text/plain"),)


def test_cgi_header_block_too_long_raises() -> None:
    _, head = cgi()
    head.feed(b"X-A: " + b"a" * (MAX_CGI_HEAD // 2))
    with pytest.raises(ValueError, match=f"CGI header block over {MAX_CGI_HEAD} bytes"):
        head.feed(b"a" * (MAX_CGI_HEAD // 2 + 10))


def test_cgi_line_without_colon_raises() -> None:
    _, head = cgi()
    with pytest.raises(ValueError, match="bad CGI header line b'hello world'"):
        head.feed(b"hello world\n\n")


def test_cgi_bad_status_raises() -> None:
    _, head = cgi()
    with pytest.raises(ValueError, match="'nope'"):
        head.feed(b"Status: nope\n\n")


def test_cgi_finish_without_blank_line_takes_headers_only() -> None:
    builder, head = cgi()
    assert head.feed(b"Status: 204 No Content\r\nX-A: 1\r\n") == b""
    assert head.done is False
    assert head.finish() == b""
    assert head.done is True
    assert builder.build() == Head(204, "No Content", (("X-A", "1"),))


def test_cgi_finish_after_done_does_nothing() -> None:
    builder, head = cgi()
    head.feed(b"X-A: 1\n\nbody")
    assert head.finish() == b""
    assert builder.build().headers == (("X-A", "1"),)


def test_cgi_header_injection_with_a_lone_cr_is_refused() -> None:
    """A second value of a repeated header goes through the same checks as the first."""
    _, head = cgi()
    with pytest.raises(ValueError, match="invalid value for header"):
        head.feed(b"X-A: 1\nX-A: 2\rSet-Cookie: session=stolen\n\n")


def test_cgi_status_reason_with_a_lone_cr_is_refused() -> None:
    builder, head = cgi()
    with pytest.raises(ValueError, match="(?i)invalid"):
        head.feed(b"Status: 200 OK\rSet-Cookie: session=stolen\n\n")
    assert builder.reason is None


def test_cgi_content_length_is_dropped_not_fatal() -> None:
    """CGI scripts commonly print Content-Length; the server frames the body itself."""
    builder, head = cgi()
    body = head.feed(b"Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nbody")
    assert body == b"body"
    assert builder.build().headers == (("Content-Type", "text/plain"),)


def test_cgi_headers_shape_the_same_head_as_fd3() -> None:
    """CGI mode shares the fd 3 HeadBuilder: fd 3 can still add to the head."""
    control = Control()
    head = CGIHead(control.head)
    head.feed(b"Status: 201\nX-Cgi: 1\n\n")
    control.feed(msg("setHeader", {"name": "X-Fd3", "value": "2"}))
    assert control.freeze() == Head(201, None, (("X-Cgi", "1"), ("X-Fd3", "2")))


# -- the control channel's bounds ------------------------------------------------


def _line(kind: str, **payload: object) -> bytes:
    return json.dumps({"type": kind, "payload": payload}).encode() + b"\n"


def test_a_head_over_its_header_count_overflows_and_keeps_the_last_good_head() -> None:
    control = Control()
    for i in range(MAX_HEADERS):
        control.feed(_line("setHeader", name=f"X-{i}", value="v"))
    assert control.overflow is None
    control.feed(_line("setHeader", name="X-Last", value="v"))
    assert control.overflow is not None
    assert "response head" in control.overflow
    assert len(control.head.build().headers) == MAX_HEADERS


def test_a_head_over_its_bytes_overflows() -> None:
    control = Control()
    half = "x" * (MAX_HEAD_BYTES // 2 + 10)
    control.feed(_line("setHeader", name="X-A", value=half))
    assert control.overflow is None
    control.feed(_line("setHeader", name="X-B", value=half))
    assert control.overflow is not None
    assert control.head.build().get("x-a") == half
    assert control.head.build().get("x-b") is None


def test_past_its_bytes_the_channel_is_ignored() -> None:
    control = Control(max_bytes=1000)
    assert control.feed(_line("log", entry="a" * 500)) != []
    assert control.feed(_line("log", entry="b" * 600)) == []
    assert control.overflow is not None
    assert control.feed(_line("statusCode", value=404)) == []
    assert control.head.build().status == 200


def test_log_messages_past_the_budget_are_counted_not_reported() -> None:
    control = Control()
    events = control.feed(b"".join(_line("log", entry=f"n{i}") for i in range(MAX_EVENTS + 50)))
    assert len(events) == MAX_EVENTS
    assert control.dropped == 50
    assert control.overflow is None
    closing = control.close()
    assert [e.kind for e in closing] == ["invalid"]
    assert "50 log or invalid control messages were dropped" in closing[0].text
