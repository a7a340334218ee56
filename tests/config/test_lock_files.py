"""The lock files (requirements/*.txt) pin what pyproject.toml asks for, with hashes.

Both README commands install from them with ``pip install --require-hashes``
(scripts/lib.sh ``ensure_venv``): ``runtime.txt`` for ``scripts/run``, ``dev.txt`` for
``scripts/test``. A dependency added to pyproject.toml without regenerating the locks fails
here, with the command that regenerates them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate the locks with `make lock` (pip-compile, see requirements/README.md)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock(name: str) -> tuple[dict[str, Version], str]:
    text = (ROOT / "requirements" / name).read_text()
    pins = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins, text


def _wanted(extras: tuple[str, ...]) -> list[Requirement]:
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    environment = default_environment()
    wanted = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
            wanted.append(requirement)
    return wanted


@pytest.mark.parametrize(("lock", "extras"), [("runtime.txt", ()), ("dev.txt", ("dev",))])
def test_every_dependency_is_pinned_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins, _ = _lock(lock)
    problems = []
    for requirement in _wanted(extras):
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in requirements/{lock}")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: requirements/{lock} pins {pins[name]}")
    assert problems == [], f"{problems}; {REGENERATE}"


@pytest.mark.parametrize("lock", ["runtime.txt", "dev.txt"])
def test_every_pin_has_a_hash_and_no_machine_path(lock: str) -> None:
    pins, text = _lock(lock)
    assert pins, f"requirements/{lock} pins nothing"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert unhashed == [], f"pinned without a hash: {unhashed}; {REGENERATE}"
    for forbidden in ("--index-url", "--extra-index-url", "--find-links", "file://"):
        assert forbidden not in text, f"requirements/{lock} names {forbidden}: {REGENERATE}"


def test_the_runtime_lock_is_part_of_the_dev_lock() -> None:
    runtime, _ = _lock("runtime.txt")
    dev, _ = _lock("dev.txt")
    differ = {name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v}
    assert differ == {}, f"runtime.txt and dev.txt pin these differently: {differ}; {REGENERATE}"
