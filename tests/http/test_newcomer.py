"""What careless clients and operators see from the HTTP side: messages, honest log lines."""

from __future__ import annotations

import logging

import pytest
import trio


async def test_a_deeply_nested_json_body_is_a_400_with_a_message(server, client, script):
    path = script("hello.py", "print('hi')\n")
    deep = "[" * 100_000 + "]" * 100_000
    async with server(path) as url:
        response = await client.post(url, content=deep,
                                     headers={"content-type": "application/json"})  # fmt: skip
        after = await client.get(url)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["message"]
    assert after.text == "hi\n"


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="stack")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "stack.access"]


async def test_a_call_that_ended_early_is_logged_as_ok_not_as_a_disconnect(
    server, client, script, access
):
    # The Python prelude sends `end` when the script is done: the response is
    # complete before the process exits, and the client goes.
    path = script("hello.py", "print('hi')\n")
    async with server(path) as url:
        for _ in range(3):
            assert (await client.get(url)).text == "hi\n"
        with trio.move_on_after(20):  # each line is written when its process has exited
            while len(_lines(access)) < 3:
                await trio.sleep(0.05)
    messages = [r.getMessage() for r in access.records]
    assert not [m for m in messages if "disconnected" in m], messages
    lines = _lines(access)
    assert len(lines) == 3
    for record in lines:
        assert record.levelno == logging.INFO
        assert " 200 ok wall=" in record.getMessage()
        assert "cpu=" in record.getMessage()
        assert "mem=" in record.getMessage()


async def test_failed_calls_are_logged_at_warning_with_their_reason(
    server, client, script, access
):
    failing = script("fail.py", "import sys\nsys.exit(3)\n")
    async with server(failing.parent, limits=None) as url:
        exited = await client.get(url + "/fail.py")
    assert exited.status_code == 500
    (line,) = _lines(access)
    assert line.levelno == logging.WARNING
    text = line.getMessage()
    assert "GET /fail.py 500 exit (the script exited with status 3) wall=" in text
    assert "cpu=" in text
    assert "mem=" in text


async def test_a_compile_error_is_logged_at_warning(server, client, script, access):
    bad = script("bad.c", "int main( {\n")
    async with server(bad) as url:
        response = await client.get(url)
    assert response.status_code == 500
    (line,) = _lines(access)
    assert line.levelno == logging.WARNING
    assert "500 compile: bad.c does not compile" in line.getMessage()
