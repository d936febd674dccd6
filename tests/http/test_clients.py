"""ClientLimits: the ``http:`` section of the config, and the body's deadline.

What the limits do to real slow clients is in tests/security/test_slow_clients.py.
"""

from __future__ import annotations

import pytest
import trio

from sandbox.config import Config
from sandbox.errors import ConfigError, RequestTimeout
from sandbox.http.body import Body, timed_receive
from sandbox.http.clients import ClientLimits


def test_the_http_section_takes_counts_durations_and_sizes():
    config = Config.from_mapping(
        {"http": {"max_connections": 200, "max_connections_per_client": 8, "head_timeout": "2s",
                  "body_timeout": 5, "body_min_rate": "1KiB", "send_timeout": "500ms",
                  "output_buffer": "64KiB"}}  # fmt: skip
    )
    assert config.http == ClientLimits(
        max_connections=200,
        max_connections_per_client=8,
        head_timeout=2.0,
        body_timeout=5.0,
        body_min_rate=1024,
        send_timeout=0.5,
        output_buffer=65536,
    )
    assert Config().http == ClientLimits()


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ({"max_conections": 10}, "unknown key(s) max_conections"),
        ({"max_connections": "many"}, "'max_connections' must be a whole number"),
        ({"max_connections_per_client": 0}, "max_connections_per_client must be at least 1"),
        ({"send_timeout": 0}, "send_timeout must be more than 0 seconds"),
        ({"output_buffer": "lots"}, "not a size"),
    ],
)
def test_a_bad_http_key_is_named(section, said):
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({"http": section}, source="stack.yaml")
    assert caught.value.message.startswith("stack.yaml: http: ")
    assert said in caught.value.message


def test_a_body_has_its_timeout_plus_a_second_per_min_rate_bytes():
    limits = ClientLimits(body_timeout=10, body_min_rate=1000)
    assert limits.body_deadline(100.0, 0) == 110.0
    assert limits.body_deadline(100.0, 5000) == 115.0
    assert ClientLimits(body_timeout=10, body_min_rate=0).body_deadline(0.0, 10**9) == 10.0


async def test_a_body_past_its_deadline_is_a_request_timeout(autojump_clock, nursery):
    send, messages = trio.open_memory_channel[dict](10)
    receive = timed_receive(messages.receive, ClientLimits(body_timeout=2, body_min_rate=100))
    body = Body(receive, None)
    await send.send({"type": "http.request", "body": b"x" * 100, "more_body": True})
    assert await body.chunk() == b"x" * 100  # it may wait 3 s for the body now

    async def trickle() -> None:
        await trio.sleep(2.5)
        await send.send({"type": "http.request", "body": b"y", "more_body": True})

    nursery.start_soon(trickle)
    assert await body.chunk() == b"y"  # 2.5 s of 3.01 waited
    with pytest.raises(RequestTimeout) as caught:
        await body.chunk()
    assert trio.current_time() == pytest.approx(3.01)
    assert caught.value.status == 408
    assert "101 bytes in 3.0 s" in caught.value.message
    assert body.done


async def test_a_complete_body_has_no_deadline_after_it(autojump_clock):
    send, messages = trio.open_memory_channel[dict](10)
    receive = timed_receive(messages.receive, ClientLimits(body_timeout=1))
    await send.send({"type": "http.request", "body": b"all", "more_body": False})
    assert (await receive())["body"] == b"all"
    await trio.sleep(60)  # the call runs; the server waits for the client to leave
    await send.send({"type": "http.disconnect"})
    assert (await receive())["type"] == "http.disconnect"


async def test_a_body_that_waited_in_the_server_is_not_late(autojump_clock):
    # The call waited for a slot longer than the body's deadline; the client
    # had sent its body in time.
    send, messages = trio.open_memory_channel[dict](10)
    receive = timed_receive(messages.receive, ClientLimits(body_timeout=1))
    await send.send({"type": "http.request", "body": b"early", "more_body": True})
    await send.send({"type": "http.request", "body": b"", "more_body": False})
    await trio.sleep(30)
    assert (await receive())["body"] == b"early"
    assert (await receive())["more_body"] is False
