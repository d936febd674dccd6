"""The per-uid cgroups (sandbox/core/cgroups.py) over fake cgroup trees.

The real hierarchies are exercised by tests/security/test_cgroups.py (root,
cgroup v1 or v2, whichever the machine has). Here the same files are plain
files in a temporary folder, so both versions' bookkeeping is checked on any
machine: which files a call's limits go to, in which order, how an OOM kill
and a group that stays full are told.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.core import cgroups
from sandbox.core.cgroups import Cgroups, Group

MiB = 1024 * 1024
UNLIMITED_V1 = "9223372036854771712"


def v1_group(root: Path) -> Group:
    dirs = {}
    for controller in ("memory", "pids", "cpu"):
        d = root / controller / "u1"
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text("")
        dirs[controller] = d
    memory = dirs["memory"]
    (memory / "memory.limit_in_bytes").write_text(UNLIMITED_V1)
    (memory / "memory.memsw.limit_in_bytes").write_text(UNLIMITED_V1)
    (memory / "memory.max_usage_in_bytes").write_text("123")
    (memory / "memory.usage_in_bytes").write_text(str(MiB))
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (dirs["pids"] / "pids.max").write_text("max")
    return Group("v1", dirs)


def v2_group(root: Path) -> Group:
    d = root / "u1"
    d.mkdir()
    for name, text in {
        "cgroup.procs": "",
        "memory.max": "max",
        "memory.swap.max": "max",
        "pids.max": "max",
        "memory.current": str(MiB),
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    }.items():
        (d / name).write_text(text)
    return Group("v2", {"memory": d, "pids": d, "cpu": d})


def test_v1_limits_reset_and_the_peak(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    memory = group.memory_dir
    group.prepare(512 * MiB, 60)
    assert (memory / "memory.limit_in_bytes").read_text() == str(512 * MiB)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(512 * MiB)
    assert (tmp_path / "pids" / "u1" / "pids.max").read_text() == str(60 + cgroups.PIDS_SLACK)
    assert (memory / "memory.max_usage_in_bytes").read_text() == "0"  # the reset
    (memory / "memory.max_usage_in_bytes").write_text(str(300 * MiB))  # what the call reached
    measured = group.finish()
    assert (measured.peak, measured.oom_killed, measured.leftovers) == (300 * MiB, False, 0)
    assert not group.stale


def test_v1_an_oom_kill_during_the_call_is_told(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    group.prepare(64 * MiB, None)
    (group.memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 3\n")
    assert group.finish().oom_killed
    group.prepare(64 * MiB, None)  # the count is remembered: the next call starts at 3
    assert not group.finish().oom_killed


def test_v1_raising_the_limit_raises_memory_and_swap_first(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    group.prepare(64 * MiB, None)
    group.prepare(None, None)  # unlimited again: memsw first, or the kernel says EINVAL
    memory = group.memory_dir
    assert (memory / "memory.limit_in_bytes").read_text() == "-1"
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == "-1"
    assert (tmp_path / "pids" / "u1" / "pids.max").read_text() == "max"


def test_v2_limits_and_oom_kills(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    group.prepare(256 * MiB, 10)
    d = group.memory_dir
    assert (d / "memory.max").read_text() == str(256 * MiB)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == str(10 + cgroups.PIDS_SLACK)
    (d / "memory.events").write_text("oom 2\noom_kill 2\n")
    measured = group.finish()
    assert measured.oom_killed
    assert measured.peak is None  # no memory.peak (before Linux 5.19): the rlimit figure is used


def test_a_group_left_holding_memory_is_replaced(tmp_path: Path) -> None:
    parents = {c: tmp_path / c for c in ("memory", "pids", "cpu")}
    for parent in parents.values():
        parent.mkdir()
    made = Cgroups("v1", parents, "test")
    first = made.group(61000)
    assert made.group(61000) is first  # reused while clean
    first.stale = True  # finish() saw more than STALE still charged after the call
    second = made.group(61000)
    assert second is not first
    assert not first.memory_dir.exists()  # removed at once: it held no process
    assert [p.name for p in parents["memory"].iterdir()] == [second.memory_dir.name]


@pytest.mark.parametrize("usage", [cgroups.STALE + 1, 200 * MiB])
def test_finish_marks_a_group_still_full_as_stale(tmp_path: Path, usage: int) -> None:
    group = v1_group(tmp_path)
    group.prepare(512 * MiB, None)
    (group.memory_dir / "memory.usage_in_bytes").write_text(str(usage))
    group.finish()
    assert group.stale


def test_no_cgroups_without_root() -> None:
    made, why = cgroups.detect(root=False)
    assert made is None
    assert "not root" in why
