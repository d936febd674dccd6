"""The Containerfile installs every language of the registry (a static check: no
container engine runs in the test environment)."""

from __future__ import annotations

import re

import yaml

from .conftest import ROOT


def setup_packages(part: str) -> set[str]:
    text = (ROOT / "scripts" / "setup.sh").read_text()
    match = re.search(rf"^{part}=\((.*?)\)", text, re.S | re.M)
    assert match, f"{part}=(...) not found in scripts/setup.sh"
    return set(match.group(1).split())


def test_setup_installs_every_registered_language():
    runtime = setup_packages("RUNTIME")
    for path in sorted((ROOT / "languages").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert spec["package"] in runtime, f"{path.name}: {spec['package']} not in RUNTIME"
    assert {"bubblewrap", "gcc", "util-linux"} <= runtime


def test_containerfile_runs_the_runtime_setup_as_non_root_with_a_healthcheck():
    text = (ROOT / "Containerfile").read_text()
    assert "STACK_SETUP=runtime scripts/setup.sh" in text
    assert re.search(r"^USER stack$", text, re.M)
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert "launcher_path()" in text  # the launcher is built at image build time
    assert "pip install --no-cache-dir /opt/stack/src" in text  # not an editable install
