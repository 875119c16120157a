"""Exit 1 if .venv lacks a dependency pyproject.toml asks for (any extra): the lock files are stale.

Run by scripts/venv after installing from requirements-dev.lock, so a dependency added to
pyproject.toml without `bash scripts/lock` fails here, by name, instead of as an ImportError later.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution, version

from packaging.requirements import Requirement


def unmet(package: str) -> list[str]:
    dist = distribution(package)
    extras = dist.metadata.get_all("Provides-Extra") or []
    problems = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker and not any(marker.evaluate({"extra": extra}) for extra in ["", *extras]):
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement} (installed {installed})")
    return problems


def main() -> int:
    problems = unmet("datasync")
    for problem in problems:
        print(f"scripts/venv: pyproject.toml needs {problem}", file=sys.stderr)
    if problems:
        print("scripts/venv: the lock files are out of date: run `bash scripts/lock` and commit them", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
