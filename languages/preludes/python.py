"""stack prelude for Python: python3 python.py SCRIPT [ARGS...]

Loads the Hook from $STACK_HOOK, then runs SCRIPT as __main__ in this process
with a global ``Hook`` dict: Hook['params'], Hook['req'], Hook['env'] and
Hook['res'], whose methods write response control messages to fd 3.

Warm (STACK_WARM=1, started ahead of its call with no SCRIPT): says
{"type": "ready"} on fd 3, then waits for its one call on stdin, a message of 8 hex digits giving the length of a JSON
object ``{"argv": [SCRIPT, ARGS...], "env": {...}}``, takes that argv and
environment, and runs the call as above. Read with os.read, exactly the
message's bytes, so the script still gets its whole stdin.

This runs before every call, so it imports nothing slow: ``json`` (it pulls in
``re``) and ``runpy`` (``pkgutil``) would triple the start time of a small
script. The Hook is parsed with json's own C scanner, control messages are
encoded by hand, and the script is compiled and run here as runpy would.
"""

import os
import sys

if sys.flags.no_site:  # the run line uses -S: the cheap part of site.main() here
    import site  # frozen; under -S its main() does not run

    sys.path.extend(d for d in site.getsitepackages() if os.path.isdir(d))
    site.setquit()  # exit(), quit()
    site.setcopyright()
    site.sethelper()  # help()

    class _RestOfSite:
        """The first top-level import nothing finds runs the rest of site
        (.pth files, user site, sitecustomize), then looks again."""

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if path is not None:
                return None
            sys.meta_path.remove(cls)
            site.main()
            import importlib.util

            return importlib.util.find_spec(name)

    sys.meta_path.append(_RestOfSite)


def _probe_control():
    # Before anything else opens a file: without an inherited fd 3 (a script
    # run by hand) the number is free and control messages are dropped.
    try:
        os.fstat(3)
    except OSError:
        return None
    return 3


_control = _probe_control()


def _make_scanner():
    try:
        from _json import make_scanner
    except ImportError:  # not CPython
        return None

    class Context:
        strict = True
        object_hook = object_pairs_hook = None
        parse_float = parse_constant = float
        parse_int = int
        memo = {}

    return make_scanner(Context())


_scanner = _make_scanner()


def _parse_json(text):
    if _scanner is not None:
        text = text.strip()
        try:
            value, end = _scanner(text, 0)
        except StopIteration:
            end = -1
        if end == len(text):
            return value
    import json  # an error to report, or no C scanner

    return json.loads(text)


try:
    from _json import encode_basestring_ascii as _json_string
except ImportError:  # not CPython
    from json.encoder import py_encode_basestring_ascii as _json_string


def _dumps(value):
    """JSON for control messages: str, int, lists and dicts of them."""
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, dict):
        items = (f"{_json_string(str(k))}:{_dumps(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    raise TypeError(f"not in a control message: {value!r}")


def _send(message):
    global _control
    if _control is None:
        return
    sys.stdout.flush()  # control and body stay in program order
    data = (_dumps(message) + "\n").encode()
    try:
        while data:
            data = data[os.write(_control, data) :]
    except OSError:
        _control = None


def _header_value(value):
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


class Response:
    """The response: body on stdout, status and headers on fd 3."""

    def __init__(self):
        self.status_code = 200
        self.headers_sent = False
        self.finished = False
        self._headers = {}

    def write(self, data):
        """Write str or bytes to the body."""
        if isinstance(data, str):
            sys.stdout.write(data)
            sys.stdout.flush()
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        self.headers_sent = True

    def end(self, data=None):
        """Write data if given, then mark the response complete."""
        if data is not None:
            self.write(data)
        self.headers_sent = self.finished = True
        _send({"type": "end"})

    def writeHead(self, code, reason=None, headers=None):
        """Set the status, an optional reason phrase and headers."""
        if isinstance(reason, dict):
            reason, headers = None, reason
        self.status_code = int(code)
        sent = {}
        for name, value in (headers or {}).items():
            sent[name] = value = _header_value(value)
            self._headers[name.lower()] = (name, value)
        _send({"type": "writeHead", "payload": {"code": self.status_code, "headers": sent}})
        if reason is not None:
            _send({"type": "statusMessage", "payload": {"value": str(reason)}})
        return self

    def status(self, code):
        """Set the status; returns the response, so calls chain."""
        self.status_code = int(code)
        _send({"type": "statusCode", "payload": {"value": self.status_code}})
        return self

    def setHeader(self, name, value):
        value = _header_value(value)
        self._headers[name.lower()] = (name, value)
        _send({"type": "setHeader", "payload": {"name": name, "value": value}})
        return self

    def getHeader(self, name):
        return self._headers.get(name.lower(), (None, None))[1]

    def removeHeader(self, name):
        self._headers.pop(name.lower(), None)
        _send({"type": "removeHeader", "payload": {"name": name}})
        return self

    def json(self, obj):
        """Send obj as application/json and end the response."""
        import json

        if "content-type" not in self._headers:
            self.setHeader("Content-Type", "application/json")
        self.end(json.dumps(obj))


def _load_hook():
    path = os.environ.get("STACK_HOOK")
    data = {}
    if path:
        with open(path, encoding="utf-8") as f:
            data = _parse_json(f.read())
    hook = {"params": {}, "req": {}, "env": {}}
    hook.update(data)
    hook["res"] = Response()
    return hook


def _run(script, hook):
    """Run script as __main__, as runpy.run_path would (and python3 script)."""
    with open(script, "rb") as f:
        source = f.read()
    code = compile(source, script, "exec", dont_inherit=True)
    main = type(sys)("__main__")
    main.__file__ = script
    main.__cached__ = None
    main.Hook = hook
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _read_exactly(count):
    data = b""
    while len(data) < count:
        chunk = os.read(0, count - len(data))
        if not chunk:
            sys.exit(0)  # the server retired this interpreter before any call
        data += chunk
    return data


def _await_call():
    """Block until the server hands this warm interpreter its call."""
    # What every call pays on first use, paid ahead: the compiler's set-up
    # (about 1 ms on the first compile()) and the atexit module.
    compile("pass", "<stack>", "exec", dont_inherit=True)
    import atexit  # noqa: F401

    _send({"type": "ready"})  # loaded: the pool counts it as ready
    message = _parse_json(_read_exactly(int(_read_exactly(8), 16)).decode("utf-8"))
    env = message["env"]
    # Most of the call's environment is the pool's already: change only the rest.
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    sys.argv[1:] = message["argv"]


def _main():
    if os.environ.get("STACK_WARM") == "1":
        _await_call()
    if len(sys.argv) < 2:
        sys.exit("usage: python3 python.py SCRIPT [ARGS...]")
    hook = _load_hook()
    script = sys.argv[1]
    del sys.argv[0]
    # As if python3 ran the script: its directory first on the import path.
    sys.path[0] = os.path.dirname(os.path.abspath(script))

    def excepthook(kind, value, tb):
        # Show the traceback from the script's first frame, not the prelude's.
        start = tb
        while start is not None and start.tb_frame.f_code.co_filename != script:
            start = start.tb_next
        if start is not None or (isinstance(value, SyntaxError) and value.filename == script):
            tb = start
            value = value.with_traceback(start)
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = excepthook
    _run(script, hook)
    _end_early(hook["res"])


def _end_early(res):
    """The script returned: complete the response now, before the interpreter's shutdown.

    Tearing down a Python process (modules, objects) takes milliseconds that
    nobody needs to wait for, unless something may still write: atexit
    handlers or other threads. The exit status is still reported; only
    output written during the shutdown itself would be dropped.
    """
    if res.finished:
        return
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    import atexit

    if getattr(atexit, "_ncallbacks", lambda: 1)():
        return
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - the shutdown reports it
        return
    _send({"type": "end"})


_main()
