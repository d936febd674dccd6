"""Every example service, over real HTTP, in every language, with and without bwrap."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import EXAMPLES

LANGS = {
    "bash": "hello.sh",
    "sh": "hello-posix",
    "javascript": "hello.js",
    "python": "hello.py",
    "php": "hello.php",
    "ruby": "hello.rb",
    "lua": "hello.lua",
    "perl": "hello.pl",
    "tcl": "hello.tcl",
}
JSON_ECHO = {"echo.js", "echo.py", "echo.php", "echo.rb"}
LINE_ECHO = {"echo.sh", "echo-posix", "echo.lua", "echo.pl", "echo.tcl"}

pytestmark = pytest.mark.parametrize("isolate", ["none", "bwrap"])


async def test_hello_in_every_language(server, client, isolate):
    async with server(EXAMPLES, isolate=isolate) as url:
        for name in LANGS.values():
            plain = await client.get(f"{url}/{name}")
            named = await client.get(f"{url}/{name}", params={"name": "Bob"})
            assert (plain.status_code, plain.text) == (200, "Hello, world!\n"), name
            assert (named.status_code, named.text) == (200, "Hello, Bob!\n"), name


async def test_echo_in_every_language(server, client, isolate):
    async with server(EXAMPLES, isolate=isolate) as url:
        for name in sorted(JSON_ECHO):
            response = await client.post(f"{url}/{name}?a=1", json={"b": "two", "n": 3})
            assert response.status_code == 200, (name, response.text)
            assert response.headers["content-type"].startswith("application/json"), name
            assert response.json() == {"a": "1", "b": "two", "n": 3}, name
        for name in sorted(LINE_ECHO):
            response = await client.post(f"{url}/{name}?a=1", data={"b": "two words"})
            assert response.status_code == 200, (name, response.text)
            assert response.text == "a=1\nb=two words\n", name


async def test_status_and_headers_via_the_hook(server, client, isolate):
    async with server(EXAMPLES, isolate=isolate) as url:
        js = await client.get(f"{url}/status-and-headers", params={"name": "cake"})
        py = await client.post(f"{url}/headers")
    assert js.status_code == 201
    assert js.headers["x-created-by"] == "stack"
    assert js.text == "created cake\n"
    assert py.status_code == 202
    assert py.headers["x-request-method"] == "POST"
    assert py.text == "accepted\n"


async def test_streaming_example_sends_the_first_line_early(server, isolate):
    async with server(EXAMPLES, isolate=isolate) as url, httpx.AsyncClient(timeout=30) as http:
        started = time.monotonic()
        async with http.stream("GET", f"{url}/stream") as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append((line, time.monotonic() - started))
    assert len(lines) == 2
    assert lines[0][1] < 1.5 < lines[1][1]


async def test_upload_and_form_examples(server, client, isolate):
    async with server(EXAMPLES, isolate=isolate) as url:
        upload = await client.post(
            f"{url}/upload", files={"doc": ("notes.txt", b"twelve bytes", "text/plain")}
        )
        form = await client.post(f"{url}/form", data={"first": "Ada", "last": "Lovelace"})
    assert upload.text == "doc: notes.txt (12 bytes, text/plain)\n"
    assert form.status_code == 200
    assert "first: Ada" in form.text
    assert "last: Lovelace" in form.text


async def test_plain_cgi_script_and_cgi_variables(server, client, isolate):
    async with server(EXAMPLES, isolate=isolate) as url:
        cgi = await client.get(f"{url}/cgi.sh/some/path")
        env = await client.get(f"{url}/env.sh/x?q=1", headers={"X-Thing": "t"})
    assert cgi.status_code == 201
    assert cgi.headers["content-type"] == "text/plain"
    assert cgi.text == "Hello from CGI, GET request for /some/path\n"
    assert "REQUEST_METHOD=GET" in env.text
    assert "QUERY_STRING=q=1" in env.text
    assert "PATH_INFO=/x" in env.text
    assert "HTTP_X_THING=t" in env.text


async def test_index_lists_every_example(server, client, isolate):
    async with server(EXAMPLES, isolate=isolate) as url:
        index = (await client.get(url + "/")).json()["services"]
    files = {s["file"] for s in index}
    assert set(LANGS.values()) <= files
    assert "cgi.sh.stack.yaml" not in files
    assert {s["language"] for s in index} == set(LANGS)
