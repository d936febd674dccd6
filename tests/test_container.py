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


def test_containerfile_runs_the_runtime_setup_and_the_server_as_root_with_a_healthcheck():
    # Root in the container: every call then gets a uid other than the server's.
    text = (ROOT / "Containerfile").read_text()
    assert "STACK_SETUP=runtime scripts/setup.sh" in text
    assert not re.search(r"^USER ", text, re.M)
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    # The launcher is built at image build time, from the module that owns it.
    assert "from sandbox.core.launcher import launcher_path" in text
    assert "pip install --no-cache-dir /opt/stack/src" in text  # not an editable install
