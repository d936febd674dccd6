"""From an HTTP request to what a script sees: the Hook, its params, CGI variables.

Sans-IO apart from :class:`Uploads`, which writes uploaded files into the
call's directory (the caller runs its ``feed`` in a worker thread). The
Hook's flat form for shells is the core's (:mod:`sandbox.core.hook`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartState, parse_options_header

from ..errors import RequestError

MAX_FIELDS = 1000
MAX_FIELD_BYTES = 1024 * 1024
_SAFE_FILE = re.compile(r"[^A-Za-z0-9._-]")
_HEADER_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class RequestInfo:
    """The parts of an HTTP request a script may see.

    Attributes:
        method: ``GET``, ``POST``...
        path: the full path as requested (decoded).
        query_string: the raw query string, without ``?``.
        headers: (lower-case name, value) pairs in order.
        remote_addr: the client's address.
        server_name: the host the request was addressed to.
        server_port: the port the server listens on.
        http_version: ``1.1``, ``2``...
        script_name: the path the service is mounted at (``/hello``).
        path_info: the rest of the path after ``script_name``.
        scheme: ``http`` or ``https``.
    """

    method: str
    path: str
    query_string: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    remote_addr: str = ""
    server_name: str = "localhost"
    server_port: int = 0
    http_version: str = "1.1"
    script_name: str = ""
    path_info: str = ""
    scheme: str = "http"

    def header(self, name: str) -> str | None:
        """The first value of a header (name in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def url(self) -> str:
        """Path and query string, as the client sent them."""
        if self.query_string:
            return f"{self.path}?{self.query_string.decode('latin-1')}"
        return self.path


def parse_query(data: bytes | str) -> dict[str, Any]:
    """Parse a query string or urlencoded form; repeated keys become lists.

    Raises:
        RequestError: more than MAX_FIELDS fields.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError as exc:
        raise RequestError(f"too many fields (at most {MAX_FIELDS})") from exc
    params: dict[str, Any] = {}
    for key, value in pairs:
        _merge(params, key, value)
    return params


def _merge(params: dict[str, Any], key: str, value: Any) -> None:
    if key in params:
        current = params[key]
        params[key] = [*current, value] if isinstance(current, list) else [current, value]
    else:
        params[key] = value


def body_kind(content_type: str | None) -> str:
    """How a body is read: ``json``, ``form``, ``multipart`` or ``raw`` (streamed)."""
    if not content_type:
        return "raw"
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return "json"
    if mime == "application/x-www-form-urlencoded":
        return "form"
    if mime == "multipart/form-data":
        return "multipart"
    return "raw"


TOO_DEEP = "the body is JSON nested too deeply to read (arrays or objects hundreds of levels deep)"


def parse_json_params(body: bytes) -> dict[str, Any]:
    """Params from a JSON body: an object's keys; any other JSON value gives none.

    Raises:
        RequestError: the body is not valid JSON.
    """
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise RequestError(TOO_DEEP) from None
    return value if isinstance(value, dict) else {}


def multipart_boundary(content_type: str) -> bytes:
    """The boundary of a multipart content type.

    Raises:
        RequestError: there is none.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError("multipart/form-data without a boundary")
    return boundary


def safe_filename(name: str) -> str:
    """A file name that stays inside its directory: no slashes, no leading dots."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE_FILE.sub("_", base).lstrip(".")[:120]
    return base or "upload"


class Uploads:
    """Parses a multipart body incrementally, fields into params, files to disk.

    Args:
        boundary: the multipart boundary.
        directory: where files are written (created by the caller).
        view: the same directory as the script sees it (differs under bwrap).
        max_files: at most this many files.
    """

    def __init__(self, boundary: bytes, directory: Path, view: PurePosixPath, *,
                 max_files: int = 100) -> None:  # fmt: skip
        self.params: dict[str, Any] = {}
        self._directory = directory
        self._view = view
        self._max_files = max_files
        self._files = 0
        self._fields = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[str, str] = {}
        self._name = ""
        self._filename: str | None = None
        self._value = bytearray()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def feed(self, data: bytes) -> None:
        """Parse more of the body (blocking: writes files).

        Raises:
            RequestError: the body is not valid multipart, or has too many parts.
        """
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            self.close()
            raise RequestError(f"malformed multipart body: {exc}") from exc

    def finish(self) -> dict[str, Any]:
        """The body ended: return the params.

        Raises:
            RequestError: the body stopped in the middle of a part.
        """
        try:
            self._parser.finalize()
        finally:
            self.close()
        if self._parser.state != MultipartState.END:
            raise RequestError("the multipart body ended before its closing boundary")
        return self.params

    def close(self) -> None:
        """Close a file left open by a body that stopped early."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = ""
        self._filename = None
        self._value = bytearray()
        self._size = 0
        self._fields += 1
        if self._fields > MAX_FIELDS:
            raise MultipartParseError(f"more than {MAX_FIELDS} parts")

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("utf-8", "replace").strip()
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            return
        self._files += 1
        if self._files > self._max_files:
            raise MultipartParseError(f"more than {self._max_files} files")
        self._filename = filename.decode("utf-8", "replace")
        base = safe_filename(self._filename)
        for attempt in range(1000):
            candidate = base if attempt == 0 else f"{attempt}-{base}"
            path = self._directory / candidate
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                continue
            self._fd, self._path = fd, path
            return
        raise MultipartParseError("too many files with the same name")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self._size += len(chunk)
        if self._fd is not None:
            os.write(self._fd, chunk)
            return
        if self._filename is None:
            if self._size > MAX_FIELD_BYTES:
                raise MultipartParseError(f"a form field is over {MAX_FIELD_BYTES} bytes")
            self._value += chunk

    def _part_end(self) -> None:
        if self._filename is not None and self._path is not None:
            self.close()
            value: Any = {
                "filename": self._filename,
                "path": str(self._view / self._path.name),
                "size": self._size,
                "contentType": self._headers.get("content-type", "application/octet-stream"),
            }
        else:
            value = self._value.decode("utf-8", "replace")
        if self._name:
            _merge(self.params, self._name, value)


def build_hook(info: RequestInfo, params: Mapping[str, Any], *, request_id: str,
               env: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The Hook JSON a prelude loads: params, req and env."""
    headers: dict[str, str] = {}
    for name, value in info.headers:
        joiner = "; " if name == "cookie" else ", "
        headers[name] = f"{headers[name]}{joiner}{value}" if name in headers else value
    return {
        "params": dict(params),
        "req": {
            "method": info.method,
            "url": info.url,
            "path": info.path,
            "query": parse_query(info.query_string),
            "headers": headers,
            "host": info.header("host") or f"{info.server_name}:{info.server_port}",
            "remoteAddress": info.remote_addr,
            "httpVersion": info.http_version,
            "id": request_id,
        },
        "env": dict(env or {}),
    }


def cgi_environ(info: RequestInfo, *, request_id: str, software: str) -> dict[str, str]:
    """The CGI/1.1 meta-variables of RFC 3875 for this request."""
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": info.method,
        "QUERY_STRING": info.query_string.decode("latin-1"),
        "PATH_INFO": info.path_info,
        "SCRIPT_NAME": info.script_name,
        "SERVER_NAME": info.server_name,
        "SERVER_PORT": str(info.server_port),
        "SERVER_PROTOCOL": f"HTTP/{info.http_version}",
        "SERVER_SOFTWARE": software,
        "REMOTE_ADDR": info.remote_addr,
        "REQUEST_URI": info.url,
        "REQUEST_SCHEME": info.scheme,
        "STACK_REQUEST_ID": request_id,
    }
    content_type = info.header("content-type")
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    content_length = info.header("content-length")
    if content_length is not None:
        env["CONTENT_LENGTH"] = content_length
    for name, value in info.headers:
        # httpoxy: a client must never set HTTP_PROXY for the script. Names
        # with "_" are dropped (as Apache does): X_Forwarded_For must not pass
        # for the X-Forwarded-For a proxy in front of us sets.
        if name in ("content-type", "content-length", "proxy") or "_" in name:
            continue
        key = "HTTP_" + _HEADER_NAME.sub("_", name.upper())
        joiner = "; " if name == "cookie" else ", "
        env[key] = f"{env[key]}{joiner}{value}" if key in env else value
    return env
