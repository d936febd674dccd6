"""The ASGI app hosted by another ASGI server (Hypercorn's CLI), mounted under a prefix."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..conftest import ROOT, need
from ..helpers import free_port


def test_hosted_by_hypercorn_and_mounted_under_a_prefix():
    need("bash")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind",
         f"127.0.0.1:{port}", "examples.asgi_app:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                parent = httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert parent.text.startswith("parent app")
        hello = httpx.get(f"http://127.0.0.1:{port}/scripts/hello.sh", params={"name": "Mo"})
        assert hello.status_code == 200
        assert "Hello, Mo!" in hello.text
        index = httpx.get(f"http://127.0.0.1:{port}/scripts/")
        assert "hello.py" in {s["name"] for s in index.json()["services"]}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()


def test_wheel_ships_languages_preludes_and_launcher(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    import zipfile

    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sandbox/core/_launcher.c" in names
    assert "sandbox/py.typed" in names
    for lang in ("bash", "python", "javascript", "php", "ruby", "lua", "perl", "tcl", "sh"):
        assert f"sandbox/_languages/{lang}.yaml" in names
    assert any(n.startswith("sandbox/_languages/preludes/python") for n in names)
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))
    ).decode()
    assert "stack = sandbox.cli.main:main" in entry
