"""Pack calibration output into one ``tar.gz`` (to copy back from a GPU machine in one file).

``python -m calibration.pack ARCHIVE DIR...`` packs each directory (hidden ``.partial`` ones, which
hold unfinished formats, are left out) and prints what it packed.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

from sunsim.output import write_atomic


def pack(archive: Path, dirs: list[Path]) -> list[str]:
    """Write ``archive`` (atomically) holding every file under ``dirs``; returns the member names.

    A file named twice (a folder and a file in it, or the same path given twice) is packed once, and
    the archive itself (when it lies in one of ``dirs``) not at all."""
    names: list[str] = []
    seen: set[str] = set()
    target = Path(archive).resolve()

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for d in dirs:
                d = Path(d)
                if not d.exists():
                    continue
                for f in ([d] if d.is_file() else sorted(d.rglob("*"))):
                    rel = str(f.relative_to(d.parent))
                    if (f.is_file() and not any(part.startswith(".") for part in Path(rel).parts)
                            and rel not in seen and f.resolve() != target):
                        tar.add(f, arcname=rel)
                        names.append(rel)
                        seen.add(rel)

    write_atomic(Path(archive), write)
    return names


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m calibration.pack ARCHIVE.tar.gz DIR...", file=sys.stderr)
        return 2
    names = pack(Path(args[0]), [Path(a) for a in args[1:]])
    print(f"packed {len(names)} files into {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
