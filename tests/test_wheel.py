"""stack as users install it: an sdist and a wheel built from this checkout,
installed into a fresh virtualenv outside it, run from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .helpers import stack_server

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """``(bin folder, environment)`` of a venv holding the wheel built from the sdist."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout: the sdist is built from the tracked files")
    work = tmp_path_factory.mktemp("wheel")
    # Only what git tracks (plus what this change adds) goes into the build,
    # as in a clean clone: build/ or egg-info left in the checkout cannot leak in.
    files = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                 cwd=ROOT).stdout.split("\0")  # fmt: skip
    source = work / "src"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, source)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, sorted(dist.iterdir())
    assert list(dist.glob("*.tar.gz")), sorted(dist.iterdir())
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", ROOT / "constraints.txt", wheels[0])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    # A cache of its own: the launcher is built from the wheel's own C source.
    env["STACK_CACHE_DIR"] = str(work / "cache")
    return venv / "bin", env


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working folder outside the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_the_wheel_holds_no_checkout_paths(installed: tuple[Path, dict[str, str]],
                                           elsewhere: Path) -> None:  # fmt: skip
    bin_dir, env = installed
    done = _run(bin_dir / "python", "-c",
                "import sandbox, sandbox.core.languages as l; print(sandbox.__file__); "
                "print(l.default_directory())", cwd=elsewhere, env=env)  # fmt: skip
    module, registry = done.stdout.split()
    assert not module.startswith(str(ROOT))
    assert "site-packages" in module
    assert registry.endswith("sandbox/_languages")
    assert (Path(registry) / "preludes" / "python.py").is_file()


def test_languages_lists_the_installed_interpreters(installed: tuple[Path, dict[str, str]],
                                                    elsewhere: Path) -> None:  # fmt: skip
    bin_dir, env = installed
    done = _run(bin_dir / "stack", "languages", cwd=elsewhere, env=env)
    names = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"bash", "python", "c", "javascript"} <= names


def test_serves_the_example_services(installed: tuple[Path, dict[str, str]],
                                     elsewhere: Path) -> None:  # fmt: skip
    bin_dir, env = installed
    services = ROOT / "examples" / "services"
    with stack_server(str(services), "-p", "0", command=[str(bin_dir / "stack")], env=env,
                      cwd=elsewhere, start_timeout=120) as (url, _):  # fmt: skip
        for name in ("hello.py", "hello.sh", "hello.js", "hello.php"):
            answer = httpx.get(f"{url}/{name}", params={"name": "Wheel"}, timeout=30)
            assert (answer.status_code, answer.text.strip()) == (200, "Hello, Wheel!"), name


def test_serve_runs_the_piston_api(installed: tuple[Path, dict[str, str]],
                                   elsewhere: Path) -> None:  # fmt: skip
    bin_dir, env = installed
    with stack_server("serve", "-p", "0", command=[str(bin_dir / "stack")], env=env,
                      cwd=elsewhere, start_timeout=120) as (url, _):  # fmt: skip
        runtimes = httpx.get(f"{url}/api/v2/runtimes", timeout=30).json()
        assert "python" in {r["language"] for r in runtimes}
        job = {"language": "c", "version": "*",
               "files": [{"content": '#include <stdio.h>\nint main(){puts("c ok");}'}]}  # fmt: skip
        answer = httpx.post(f"{url}/api/v2/execute", json=job, timeout=120).json()
        assert answer["compile"]["code"] == 0, answer
        assert (answer["run"]["stdout"], answer["run"]["code"]) == ("c ok\n", 0)


def test_exec_compiles_and_runs_a_c_file(installed: tuple[Path, dict[str, str]],
                                         elsewhere: Path) -> None:  # fmt: skip
    bin_dir, env = installed
    (elsewhere / "hello.c").write_text(
        '#include <stdio.h>\nint main(int c, char **v){printf("hi %s\\n", v[1]); return 3;}\n'
    )
    done = subprocess.run([str(bin_dir / "stack"), "exec", "hello.c", "there"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert (done.stdout, done.returncode) == ("hi there\n", 3), done.stderr
