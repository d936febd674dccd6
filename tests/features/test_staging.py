"""What of a service's folder is staged as its code (sandbox.features.staging), on real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandbox.features import staging


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
        (root / name).chmod(0o644)
    return root


def test_survey_keeps_code_and_leaves_out_secrets_links_and_caches(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "app", {
        "hello.py": "", "helper.py": "", "pkg/__init__.py": "", "data/words.txt": "",
        ".env": "", ".git/config": "", "deploy.key": "", "tls.pem": "", "id_rsa": "",
        "prod.env": "", "hello.py.stack.yaml": "", "__pycache__/helper.pyc": "",
    })  # fmt: skip
    (folder / "outside").symlink_to("/etc")
    found = staging.survey(folder, ["hello.py"], root=False)
    assert sorted(found.files) == ["data/words.txt", "hello.py", "helper.py", "pkg/__init__.py"]
    assert found.too_large is None
    assert found.left_out == {
        "secret-looking (dotfiles, keys, settings)": 7,
        "symlinks": 1,
        "__pycache__ folders": 1,
    }
    assert "4 file(s), 0 bytes; left out: 1 __pycache__ folders" in found.summary()


def test_the_scripts_served_are_staged_whatever_their_names(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"service.key": "", "helper.sh": ""})
    found = staging.survey(folder, ["service.key"], root=False)
    assert sorted(found.files) == ["helper.sh", "service.key"]


@pytest.mark.skipif(
    os.geteuid() != 0, reason="calls run as other uids only when the server is root"
)
def test_as_root_only_what_others_may_read_is_staged(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"hello.sh": "", "public.sh": "", "private.sh": "", "closed/x.sh": ""})
    (folder / "hello.sh").chmod(0o600)  # the script itself: the operator named it
    (folder / "private.sh").chmod(0o600)
    (folder / "closed").chmod(0o700)
    found = staging.survey(folder, ["hello.sh"])
    assert sorted(found.files) == ["hello.sh", "public.sh"]
    assert found.left_out == {"unreadable by calls": 2}


def test_what_anyone_may_write_to_is_not_staged(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"hello.sh": "", "lib.sh": "", "open.sh": "", "drop/x.sh": ""})
    (folder / "open.sh").chmod(0o666)
    (folder / "drop").chmod(0o1777)
    found = staging.survey(folder, ["hello.sh"], root=False)
    assert sorted(found.files) == ["hello.sh", "lib.sh"]
    assert found.left_out == {"writable by anyone": 2}


def test_a_folder_over_the_cap_stages_the_script_alone(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {f"file{i}.txt": "x" * 10 for i in range(5)} | {"hello.sh": ""})
    by_count = staging.survey(folder, ["hello.sh"], root=False, max_files=3)
    by_size = staging.survey(folder, ["hello.sh"], root=False, max_bytes=25)
    assert list(by_count.files) == list(by_size.files) == ["hello.sh"]
    assert by_count.too_large == "it holds more than 3 files or 64 MiB"
    assert by_size.too_large == "it holds more than 2000 files or 25 bytes"


def test_folders_that_are_not_code(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    assert staging.not_code(shared) is None
    shared.chmod(0o1777)
    assert staging.not_code(shared) == "anyone may write to it"
    assert staging.not_code(Path("/")) == "it is the root folder"
    home = Path.home()
    if home.is_dir() and not home.stat().st_mode & 0o002 and home != Path("/"):
        assert staging.not_code(home) == "it is a home folder"


def test_sync_copies_replaces_and_prunes(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source", {"hello.sh": "v1", "lib/a.sh": "a", "lib/deep/b.sh": "b"})
    (source / "hello.sh").chmod(0o700)
    target = tmp_path / "staged"
    code = staging.StagedCode(source, target, ["hello.sh"])
    assert code.sync() is True
    assert (target / "hello.sh").read_text() == "v1"
    assert stat.S_IMODE((target / "hello.sh").stat().st_mode) == 0o755  # executable, read-only
    assert stat.S_IMODE((target / "lib/a.sh").stat().st_mode) == 0o644
    assert code.sync() is False  # nothing changed
    (source / "hello.sh").write_text("v2")
    os.utime(source / "hello.sh", ns=(1, 1))
    (source / "lib/deep/b.sh").unlink()
    (source / "lib/deep").rmdir()
    assert code.sync() is True
    assert (target / "hello.sh").read_text() == "v2"
    found = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    assert found == ["hello.sh", "lib", "lib/a.sh"]
