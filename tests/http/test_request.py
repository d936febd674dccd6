"""From a request to what a script sees (sandbox/core/hook.py, sandbox/http/request.py): plain functions, no event loop.

:class:`Uploads` is the one part that writes files; it writes into ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from sandbox.core.hook import MAX_FLAT_ENV, encode_flat, flat_env, flatten, whole_flat_env
from sandbox.errors import RequestError
from sandbox.http.request import (
    MAX_FIELDS,
    RequestInfo,
    Uploads,
    body_kind,
    build_hook,
    cgi_environ,
    multipart_boundary,
    parse_json_params,
    parse_query,
    safe_filename,
)

VIEW = PurePosixPath("/tmp/call/uploads")
BOUNDARY = b"----stackBoundary7MA4YWxkTrZu0gW"


# -- query strings and bodies -------------------------------------------------


def test_parse_query_simple() -> None:
    assert parse_query(b"name=Bob&age=42") == {"name": "Bob", "age": "42"}


def test_parse_query_repeated_keys_become_lists() -> None:
    assert parse_query("tag=a&tag=b&tag=c&one=1") == {"tag": ["a", "b", "c"], "one": "1"}


def test_parse_query_keeps_blank_values() -> None:
    assert parse_query(b"a=&b&c=3") == {"a": "", "b": "", "c": "3"}


def test_parse_query_decodes_percent_and_plus() -> None:
    assert parse_query(b"q=hello+world%21&name=J%C3%BCrgen") == {
        "q": "hello world!",
        "name": "J\u00fcrgen",
    }


def test_parse_query_replaces_invalid_utf8() -> None:
    assert parse_query(b"a=%FF") == {"a": "\ufffd"}


def test_parse_query_empty() -> None:
    assert parse_query(b"") == {}


def test_parse_query_too_many_fields() -> None:
    data = "&".join(f"k{i}=v" for i in range(MAX_FIELDS + 1))
    with pytest.raises(RequestError, match=f"too many fields \\(at most {MAX_FIELDS}\\)"):
        parse_query(data)


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("Application/JSON", "json"),
        ("application/vnd.api+json", "json"),
        ("application/ld+json; profile=x", "json"),
        ("application/x-www-form-urlencoded", "form"),
        ("application/x-www-form-urlencoded; charset=UTF-8", "form"),
        ("multipart/form-data; boundary=abc", "multipart"),
        ("text/plain", "raw"),
        ("application/octet-stream", "raw"),
        ("text/json+xml", "raw"),
        ("multipart/mixed; boundary=abc", "raw"),
        ("", "raw"),
        (None, "raw"),
    ],
)
def test_body_kind(content_type: str | None, kind: str) -> None:
    assert body_kind(content_type) == kind


def test_parse_json_params_object() -> None:
    assert parse_json_params(b'{"name": "Bob", "tags": [1, 2], "n": {"a": null}}') == {
        "name": "Bob",
        "tags": [1, 2],
        "n": {"a": None},
    }


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_parse_json_params_non_object_gives_no_params(body: bytes) -> None:
    assert parse_json_params(body) == {}


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\t"])
def test_parse_json_params_empty_body(body: bytes) -> None:
    assert parse_json_params(body) == {}


@pytest.mark.parametrize("body", [b"{", b"{'a': 1}", b"name=Bob", b"\xff\xfe{}"])
def test_parse_json_params_invalid(body: bytes) -> None:
    with pytest.raises(RequestError, match="the body is not valid JSON: ") as info:
        parse_json_params(body)
    assert info.value.status == 400


def test_multipart_boundary() -> None:
    assert multipart_boundary('multipart/form-data; boundary="abc def"') == b"abc def"
    assert multipart_boundary("multipart/form-data; boundary=xyz") == b"xyz"


def test_multipart_without_boundary() -> None:
    with pytest.raises(RequestError, match="multipart/form-data without a boundary"):
        multipart_boundary("multipart/form-data")


# -- file names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\x", "x"),
        ("C:\\Users\\bob\\notes.txt", "notes.txt"),
        (".hidden", "hidden"),
        ("...dots", "dots"),
        ("..", "upload"),
        (".", "upload"),
        ("", "upload"),
        ("dir/", "upload"),
        ("my file (1).txt", "my_file__1_.txt"),
        ("r\u00e9sum\u00e9.pdf", "r_sum_.pdf"),
        ("\u65e5\u672c.txt", "__.txt"),
        ("a\0b.txt", "a_b.txt"),
        ("semi;colon$(rm -rf).sh", "semi_colon__rm_-rf_.sh"),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def test_safe_filename_caps_the_length() -> None:
    assert safe_filename("a" * 1000 + ".txt") == "a" * 120


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..\\..\\x", ".hidden", "", "a" * 500])
def test_safe_filename_stays_in_its_directory(name: str, tmp_path: Path) -> None:
    safe = safe_filename(name)
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    assert not safe.startswith(".")
    assert "/" not in safe


# -- multipart uploads --------------------------------------------------------


def part(
    name: str, value: bytes, filename: str | None = None, content_type: str | None = None
) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"Content-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return b"--" + BOUNDARY + b"\r\n" + head.encode() + b"\r\n" + value + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


FORM = multipart(
    part("name", b"Bob"),
    part("comment", "gr\u00fc\u00df dich\r\nline 2".encode()),
    part("avatar", b"\x89PNG\r\n\x1a\n\x00binary", "../../me.png", "image/png"),
    part("notes", b"hello\n", "/etc/passwd"),
)


def upload(
    body: bytes, directory: Path, *, chunk: int | None = None, **options: Any
) -> dict[str, Any]:
    uploads = Uploads(BOUNDARY, directory, VIEW, **options)
    step = chunk or len(body) or 1
    for start in range(0, len(body), step):
        uploads.feed(body[start : start + step])
    return uploads.finish()


@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
def test_uploads_fields_and_files(tmp_path: Path, chunk: int | None) -> None:
    params = upload(FORM, tmp_path, chunk=chunk)
    assert params == {
        "name": "Bob",
        "comment": "gr\u00fc\u00df dich\r\nline 2",
        "avatar": {
            "filename": "../../me.png",
            "path": str(VIEW / "me.png"),
            "size": 15,
            "contentType": "image/png",
        },
        "notes": {
            "filename": "/etc/passwd",
            "path": str(VIEW / "passwd"),
            "size": 6,
            "contentType": "application/octet-stream",
        },
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.png", "passwd"]
    assert (tmp_path / "me.png").read_bytes() == b"\x89PNG\r\n\x1a\n\x00binary"
    assert (tmp_path / "passwd").read_bytes() == b"hello\n"


def test_uploads_same_file_name_twice_gets_two_files(tmp_path: Path) -> None:
    body = multipart(
        part("files", b"first", "a.txt", "text/plain"),
        part("files", b"second", "sub/a.txt", "text/plain"),
    )
    params = upload(body, tmp_path)
    first, second = params["files"]
    assert first["path"] == str(VIEW / "a.txt")
    assert second["path"] == str(VIEW / "1-a.txt")
    assert (tmp_path / "a.txt").read_bytes() == b"first"
    assert (tmp_path / "1-a.txt").read_bytes() == b"second"


def test_uploads_never_overwrite_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"already here")
    params = upload(multipart(part("f", b"new", "a.txt")), tmp_path)
    assert params["f"]["path"] == str(VIEW / "1-a.txt")
    assert (tmp_path / "a.txt").read_bytes() == b"already here"
    assert (tmp_path / "1-a.txt").read_bytes() == b"new"


def test_uploads_do_not_follow_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "a.txt").symlink_to(outside)
    params = upload(multipart(part("f", b"new", "a.txt")), uploads)
    assert params["f"]["path"] == str(VIEW / "1-a.txt")
    assert outside.read_bytes() == b"secret"


def test_uploads_repeated_field_names_become_lists(tmp_path: Path) -> None:
    params = upload(multipart(part("tag", b"a"), part("tag", b"b"), part("tag", b"c")), tmp_path)
    assert params == {"tag": ["a", "b", "c"]}


def test_uploads_empty_file(tmp_path: Path) -> None:
    params = upload(multipart(part("f", b"", "empty.bin")), tmp_path)
    assert params["f"]["size"] == 0
    assert (tmp_path / "empty.bin").read_bytes() == b""


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"this is not multipart at all\r\n", "malformed multipart body: "),
        (b"--wrongBoundary\r\n\r\nx\r\n", "malformed multipart body: "),
        (
            b"--" + BOUNDARY + b"\r\nContent-Disposition form-data\r\n\r\nx\r\n",
            "malformed multipart body: ",
        ),
    ],
)
def test_uploads_malformed_body(tmp_path: Path, body: bytes, why: str) -> None:
    uploads = Uploads(BOUNDARY, tmp_path, VIEW)
    with pytest.raises(RequestError, match=why) as info:
        uploads.feed(body)
    assert info.value.status == 400


def test_uploads_body_cut_in_the_middle_of_a_file(tmp_path: Path) -> None:
    """A body that stops mid-part is malformed; finish() says so instead of half a file."""
    uploads = Uploads(BOUNDARY, tmp_path, VIEW)
    uploads.feed(FORM[: FORM.index(b"binary") + 3])
    with pytest.raises(RequestError) as info:
        uploads.finish()
    assert info.value.status == 400


def test_uploads_more_than_max_files(tmp_path: Path) -> None:
    body = multipart(part("a", b"1", "a.txt"), part("b", b"2", "b.txt"), part("c", b"3", "c.txt"))
    uploads = Uploads(BOUNDARY, tmp_path, VIEW, max_files=2)
    with pytest.raises(RequestError, match="more than 2 files"):
        uploads.feed(body)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_uploads_max_files_counts_files_not_fields(tmp_path: Path) -> None:
    body = multipart(part("x", b"1"), part("y", b"2"), part("a", b"1", "a.txt"))
    assert upload(body, tmp_path, max_files=1)["a"]["size"] == 1


def test_uploads_more_than_max_fields(tmp_path: Path) -> None:
    body = multipart(*(part(f"f{i}", b"v") for i in range(MAX_FIELDS + 1)))
    uploads = Uploads(BOUNDARY, tmp_path, VIEW)
    with pytest.raises(RequestError, match=f"more than {MAX_FIELDS} parts"):
        uploads.feed(body)


# -- the Hook -----------------------------------------------------------------


INFO = RequestInfo(
    method="POST",
    path="/hello/world",
    query_string=b"name=Bob&tag=a&tag=b",
    headers=(
        ("host", "example.test:3000"),
        ("user-agent", "curl/8"),
        ("content-type", "application/json"),
        ("content-length", "17"),
        ("accept", "text/html"),
        ("accept", "application/json"),
        ("x-forwarded-for", "10.0.0.1"),
    ),
    remote_addr="127.0.0.1",
    server_name="example.test",
    server_port=3000,
    http_version="1.1",
    script_name="/hello",
    path_info="/world",
)


def test_build_hook_shape() -> None:
    hook = build_hook(INFO, {"name": "Bob", "x": 1}, request_id="req-1", env={"SERVICE": "on"})
    assert hook == {
        "params": {"name": "Bob", "x": 1},
        "req": {
            "method": "POST",
            "url": "/hello/world?name=Bob&tag=a&tag=b",
            "path": "/hello/world",
            "query": {"name": "Bob", "tag": ["a", "b"]},
            "headers": {
                "host": "example.test:3000",
                "user-agent": "curl/8",
                "content-type": "application/json",
                "content-length": "17",
                "accept": "text/html, application/json",
                "x-forwarded-for": "10.0.0.1",
            },
            "host": "example.test:3000",
            "remoteAddress": "127.0.0.1",
            "httpVersion": "1.1",
            "id": "req-1",
        },
        "env": {"SERVICE": "on"},
    }
    json.dumps(hook)  # the engine writes it as JSON


def test_build_hook_without_host_header_or_query() -> None:
    info = RequestInfo(method="GET", path="/", server_name="localhost", server_port=8080)
    hook = build_hook(info, {}, request_id="r")
    assert hook["req"]["url"] == "/"
    assert hook["req"]["query"] == {}
    assert hook["req"]["host"] == "localhost:8080"
    assert hook["req"]["headers"] == {}
    assert hook["env"] == {}


def test_build_hook_copies_params_and_env() -> None:
    params = {"a": "1"}
    env = {"E": "1"}
    hook = build_hook(INFO, params, request_id="r", env=env)
    hook["params"]["b"] = "2"
    hook["env"]["F"] = "2"
    assert params == {"a": "1"}
    assert env == {"E": "1"}


# -- the flat form for shells -------------------------------------------------


def test_flatten_nested_dicts_and_lists() -> None:
    value = {
        "params": {"name": "Bob", "tags": ["a", "b"], "deep": {"x": {"y": "z"}}},
        "req": {"headers": {"user-agent": "curl/8", "x.dotted.name": "d"}},
    }
    assert flatten(value) == [
        ("Hook_params_name", "Bob"),
        ("Hook_params_tags_0", "a"),
        ("Hook_params_tags_1", "b"),
        ("Hook_params_deep_x_y", "z"),
        ("Hook_req_headers_user_agent", "curl/8"),
        ("Hook_req_headers_x_dotted_name", "d"),
    ]


def test_flatten_lists_of_objects() -> None:
    assert flatten({"items": [{"id": 1}, {"id": 2}]}) == [
        ("Hook_items_0_id", "1"),
        ("Hook_items_1_id", "2"),
    ]


def test_flatten_scalars() -> None:
    value = {"none": None, "yes": True, "no": False, "int": 42, "float": 1.5, "text": "t"}
    assert flatten(value) == [
        ("Hook_none", ""),
        ("Hook_yes", "true"),
        ("Hook_no", "false"),
        ("Hook_int", "42"),
        ("Hook_float", "1.5"),
        ("Hook_text", "t"),
    ]


def test_flatten_names_become_shell_names() -> None:
    value = {"a-b": "1", "c.d": "2", "e f": "3", "g$(x)": "4", "\u00fc": "5"}
    assert flatten(value) == [
        ("Hook_a_b", "1"),
        ("Hook_c_d", "2"),
        ("Hook_e_f", "3"),
        ("Hook_g__x_", "4"),
        ("Hook__", "5"),
    ]


def test_flatten_leaves_out_values_with_nul() -> None:
    assert flatten({"bad": "a\0b", "good": "ok", "list": ["x\0", "y"]}) == [
        ("Hook_good", "ok"),
        ("Hook_list_1", "y"),
    ]


def test_flatten_keeps_newlines_and_quotes() -> None:
    assert flatten({"v": "line1\nline2 '\"$(x)"}) == [("Hook_v", "line1\nline2 '\"$(x)")]


def test_flatten_empty_containers_give_nothing() -> None:
    assert flatten({"params": {}, "tags": []}) == []


def test_flatten_prefix() -> None:
    assert flatten({"a": "1"}, prefix="X") == [("X_a", "1")]


def test_encode_flat_format() -> None:
    data = encode_flat([("Hook_a", "1"), ("Hook_b", ""), ("Hook_c", "gr\u00fc\u00df\nx")])
    assert data == b"Hook_a\x001\x00Hook_b\x00\x00Hook_c\x00gr\xc3\xbc\xc3\x9f\nx\x00"


def test_encode_flat_empty() -> None:
    assert encode_flat([]) == b""


def test_flat_form_of_a_json_body_with_a_lone_surrogate() -> None:
    """JSON allows "\\ud800"; one such value must not stop the other params reaching the script."""
    params = parse_json_params(b'{"bad": "\\ud800", "good": "ok"}')
    data = encode_flat(flatten({"params": params}))
    assert b"Hook_params_good\x00ok\x00" in data
    env = flat_env(flatten({"params": params}))
    assert env["Hook_params_good"] == "ok"
    for name, value in env.items():
        (name + value).encode("utf-8", "surrogateescape")  # what os.environ needs


def test_flat_env_keeps_everything_small() -> None:
    pairs = [("Hook_a", "1"), ("Hook_b", "2")]
    assert flat_env(pairs) == {"Hook_a": "1", "Hook_b": "2"}


def test_flat_env_stops_at_the_cap() -> None:
    value = "x" * 1000
    pairs = [(f"Hook_v{i}", value) for i in range(1000)]
    env = flat_env(pairs)
    per = len("Hook_v000") + 1000 + 2
    assert MAX_FLAT_ENV - per < sum(len(k) + len(v) + 2 for k, v in env.items()) <= MAX_FLAT_ENV
    assert list(env) == [name for name, _ in pairs[: len(env)]]


# -- CGI/1.1 ------------------------------------------------------------------


def test_cgi_environ_has_the_rfc_3875_variables() -> None:
    env = cgi_environ(INFO, request_id="req-1", software="stack/0.1.0")
    assert env == {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": "name=Bob&tag=a&tag=b",
        "PATH_INFO": "/world",
        "SCRIPT_NAME": "/hello",
        "SERVER_NAME": "example.test",
        "SERVER_PORT": "3000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "stack/0.1.0",
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_URI": "/hello/world?name=Bob&tag=a&tag=b",
        "REQUEST_SCHEME": "http",
        "STACK_REQUEST_ID": "req-1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "17",
        "HTTP_HOST": "example.test:3000",
        "HTTP_USER_AGENT": "curl/8",
        "HTTP_ACCEPT": "text/html, application/json",
        "HTTP_X_FORWARDED_FOR": "10.0.0.1",
    }


def test_cgi_environ_without_a_body() -> None:
    info = RequestInfo(method="GET", path="/", http_version="2", scheme="https")
    env = cgi_environ(info, request_id="r", software="s")
    assert "CONTENT_TYPE" not in env
    assert "CONTENT_LENGTH" not in env
    assert env["QUERY_STRING"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["REQUEST_SCHEME"] == "https"
    assert not [name for name in env if name.startswith("HTTP_")]


def test_cgi_environ_never_sets_http_proxy() -> None:
    """httpoxy: a client's ``Proxy:`` header must not become HTTP_PROXY for the script."""
    info = RequestInfo(
        method="GET", path="/", headers=(("proxy", "http://evil.test:8080"), ("x-a", "1"))
    )
    env = cgi_environ(info, request_id="r", software="s")
    assert "HTTP_PROXY" not in env
    assert "http://evil.test:8080" not in env.values()
    assert env["HTTP_X_A"] == "1"


def test_cgi_environ_header_names_become_variable_names() -> None:
    info = RequestInfo(
        method="GET", path="/", headers=(("x-my.header", "1"), ("accept-language", "de"))
    )
    env = cgi_environ(info, request_id="r", software="s")
    assert env["HTTP_X_MY_HEADER"] == "1"
    assert env["HTTP_ACCEPT_LANGUAGE"] == "de"


def test_whole_flat_env_is_all_or_nothing() -> None:
    small = [("Hook_a", "1"), ("Hook_b", "2")]
    assert whole_flat_env(small) == {"Hook_a": "1", "Hook_b": "2"}
    assert whole_flat_env([*small, ("Hook_big", "x" * MAX_FLAT_ENV)]) is None
