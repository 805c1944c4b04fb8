"""Check a folder of carried wheels against their own requirements, for a machine without a registry.

``python -m calibration.wheels DIR [IMAGE_PACKAGE...]`` reads every wheel's ``Requires-Dist`` (for
CPython 3.12 on x86-64 Linux, extras left out) and reports each requirement that neither a carried
wheel (of a matching version) nor the image provides; exit 1 when there is one. Installing with
``--no-deps`` on the GPU machine would otherwise succeed and fail only at import (gemlite needs
``tqdm``: int4/int8 would be skipped).
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip always vendors it (this runs where pip downloads the wheels)
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

#: The machine the wheels are for (the GPU image: CPython 3.12, manylinux x86-64).
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "platform_system": "Linux",
          "sys_platform": "linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """Name, version and ``Requires-Dist`` lines of one wheel."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = Parser().parsestr(z.read(meta).decode("utf-8"))
    return msg["Name"], msg["Version"], msg.get_all("Requires-Dist") or []


def unmet(folder: Path, image: list[str]) -> list[str]:
    """Every requirement of a wheel in ``folder`` that neither the wheels nor ``image`` satisfy."""
    wheels = {canonical(n): (n, v, reqs) for n, v, reqs in map(metadata, sorted(Path(folder).glob("*.whl")))}
    have = {canonical(p) for p in image}
    problems = []
    for name, version, reqs in sorted(wheels.values()):
        for line in reqs:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(TARGET):
                continue  # another platform's, or an extra's
            dep = canonical(req.name)
            if dep in wheels:
                carried = wheels[dep][1]
                if req.specifier and not req.specifier.contains(Version(carried), prereleases=True):
                    problems.append(f"{name} {version} needs {req.name}{req.specifier}; the carried {dep} is {carried}")
            elif dep not in have:
                problems.append(f"{name} {version} needs {line.split(';')[0].strip()}; neither carried nor in the image")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m calibration.wheels DIR [IMAGE_PACKAGE...]", file=sys.stderr)
        return 2
    problems = unmet(Path(args[0]), args[1:])
    for p in problems:
        print(f"missing: {p}", file=sys.stderr)
    if not problems:
        print(f"every requirement of the wheels in {args[0]} is carried or in the image")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
