"""What a wheel of `tracking` holds: pyproject.toml lists its packages one by one (the Alembic
history is mapped in from migrations/), so a folder added under tracking/ and not listed would be
missing from every install but an editable one."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.harness import ROOT

PACKAGE = ROOT / "tracking"


def listed_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages: list[str] = config["tool"]["setuptools"]["packages"]
    return set(packages)


def folders_with_files(root: Path) -> set[str]:
    """The dotted names of the folders under ``root`` that hold a file an install needs."""
    found = set()
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".html", ".typed"):
            found.add(".".join(path.parent.relative_to(root.parent).parts))
    return found


def test_every_folder_of_the_package_is_listed_for_the_wheel() -> None:
    missing = folders_with_files(PACKAGE) - listed_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_the_check_finds_a_folder_that_is_not_listed(tmp_path: Path) -> None:
    (tmp_path / "tracking" / "newpart").mkdir(parents=True)
    (tmp_path / "tracking" / "__init__.py").write_text("")
    (tmp_path / "tracking" / "newpart" / "__init__.py").write_text("")
    assert folders_with_files(tmp_path / "tracking") == {"tracking", "tracking.newpart"}
