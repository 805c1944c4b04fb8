"""Checks before any work, and the one rule for every command's outputs (:func:`claim_outputs`)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sunsim.errors import InputError
from sunsim.output.files import write_json

#: The file that marks a folder as written by a sunsim command (and so replaceable by a later run of it).
MARKER = ".sunsim-run.json"
#: Single files sunsim wrote into a folder it does not own (a trace, a sweep table), so it may replace them.
LEDGER = ".sunsim-files.json"


def check_folder(folder: Path, field: str) -> Path:
    """``folder`` is a writable folder, or can be created as one (its nearest existing parent is writable)."""
    folder = Path(folder)
    probe = folder
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{field}: {str(probe)!r} is not a folder, so {str(folder)!r} cannot be written")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{field}: cannot write in {str(probe)!r} (permission denied)")
    return folder


def check_file_target(path: Path, field: str, suffixes: Iterable[str] | None = None) -> Path:
    """An output file: a new path or an existing regular file (not a device, link or folder) in a writable folder."""
    path = Path(path)
    if suffixes is not None:
        allowed = list(suffixes)
        if path.suffix not in allowed:
            raise InputError(f"{field}: {str(path)!r} has an unknown extension; allowed: {', '.join(allowed)}")
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = "folder" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "special file"
            raise InputError(f"{field}: {str(path)!r} is a {kind}; give a new path or a regular file to replace")
    check_folder(path.parent, field)
    return path


def check_replaceable(out: Path, folders: Iterable[str], files: Iterable[str], field: str,
                      command: str = "run") -> None:
    """Refuse, before any work, to publish over anything in ``out`` that ``command`` did not write.

    ``out`` follows :func:`check_owned_folder`; of its entries, ``folders`` are replaced only when they
    carry ``command``'s :data:`MARKER`, ``files`` only when they are regular files.
    """
    out = Path(out)
    check_owned_folder(out, command, field)
    for name in folders:
        target = out / name
        if os.path.lexists(target) and (target.is_symlink() or marker_command(target) != command):
            raise InputError(f"{field}: {str(target)!r} already exists and was not written by sunsim {command} "
                             f"(no {MARKER} of its own); refusing to replace it: choose another output folder")
    for name in files:
        target = out / name
        if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
            raise InputError(f"{field}: {str(target)!r} exists and is not a regular file; refusing to replace it")


def mark(folder: Path, info: dict) -> Path:
    """Write the marker that lets a later run replace ``folder``."""
    return write_json(Path(folder) / MARKER, {"written_by": "sunsim", **info})


# --------------------------------------------------------------------------------------
# The one rule for outputs, shared by every command
@dataclass(frozen=True)
class Output:
    """One thing a command is about to write: a ``folder`` it owns whole, or a single ``file``."""

    path: Path
    field: str
    kind: str = "folder"  # "folder" | "file"


def claim_outputs(command: str, outputs: Iterable[Output], inputs: Iterable[tuple[Path, str]] = ()) -> None:
    """Check, before any work, that ``command`` may write every one of ``outputs``; raise InputError if not.

    The rule, for every command:

    * an output never has the path of an input, lies inside an output folder, or holds an input;
    * a folder output is new, empty, or marked by an earlier run of the same command
      (:data:`MARKER`): sunsim never writes into a folder it did not create;
    * a file output is new, or a regular file this command wrote (recorded in the folder's
      :data:`LEDGER`, or inside a folder this command owns) and unchanged since.

    Error messages name both paths of a clash, so the user sees what would have been lost.
    """
    outs = [Output(Path(o.path), o.field, o.kind) for o in outputs]
    ins = [(Path(p), what) for p, what in inputs]
    for i, out in enumerate(outs):
        for path, what in ins:
            if _covers(out, path):
                verb = "is" if _same(out.path, path) else "holds"
                raise InputError(f"{out.field}: the output {str(out.path)!r} {verb} the {what} {str(path)!r}; "
                                 "an output never replaces an input: choose another path")
        for other in outs[i + 1:]:
            if _covers(out, other.path) or _covers(other, out.path):
                raise InputError(f"{other.field}: {str(other.path)!r} clashes with {out.field} {str(out.path)!r}; "
                                 "two outputs of one command never share a path or a folder")
        if out.kind == "folder":
            check_owned_folder(out.path, command, out.field)
        else:
            check_owned_file(out.path, command, out.field)


def _covers(out: Output, path: Path) -> bool:
    """Whether writing ``out`` could replace ``path``: the same path, or a path inside a folder output."""
    return _same(out.path, path) or (out.kind == "folder" and _inside(path, out.path))


def _real(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _same(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return real.startswith(base.rstrip(os.sep) + os.sep)


def marker_command(folder: Path) -> str | None:
    """The command whose marker ``folder`` carries; None without one (or with a damaged one)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("command") if isinstance(data, dict) and data.get("written_by") == "sunsim" else None


def check_owned_folder(folder: Path, command: str, field: str) -> Path:
    """``folder`` is new, empty, or marked by ``command``; its nearest existing parent is writable."""
    folder = Path(folder)
    if os.path.lexists(folder):
        if folder.is_symlink() or not folder.is_dir():
            raise InputError(f"{field}: {str(folder)!r} exists and is not a folder; give a new folder")
        owner = marker_command(folder)
        if owner is None and _has_entries(folder):
            raise InputError(f"{field}: {str(folder)!r} already holds files sunsim did not write (no {MARKER}); "
                             f"sunsim {command} writes only into a new or empty folder, or one it wrote before")
        if owner is not None and owner != command:
            raise InputError(f"{field}: {str(folder)!r} holds the output of `sunsim {owner}`; sunsim {command} "
                             "will not write into it: choose a new folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"{field}: cannot write in {str(folder)!r} (permission denied)")
        return folder
    return check_folder(folder, field)


def check_owned_file(path: Path, command: str, field: str, suffixes: Iterable[str] | None = None) -> Path:
    """``path`` is new, or a regular file ``command`` wrote and nobody changed since."""
    path = check_file_target(path, field, suffixes)
    if os.path.lexists(path) and not owns_file(path, command):
        raise InputError(f"{field}: {str(path)!r} already exists and was not written by sunsim {command}; "
                         "refusing to replace it: give a new path")
    return path


def owns_file(path: Path, command: str) -> bool:
    """Whether ``command`` wrote the file at ``path`` (and it is unchanged since)."""
    path = Path(path)
    if marker_command(path.parent) == command:
        return True
    entry = _read_ledger(path.parent).get(path.name)
    try:
        st = os.stat(path)
    except OSError:
        return False
    return isinstance(entry, dict) and entry.get("command") == command and \
        entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def record_file(path: Path, command: str) -> None:
    """Note in the folder's ledger that ``command`` wrote ``path``, so a later run of it may replace the file."""
    path = Path(path)
    if marker_command(path.parent) == command:
        return
    ledger = _read_ledger(path.parent)
    st = os.stat(path)
    ledger[path.name] = {"command": command, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    write_json(path.parent / LEDGER, {"written_by": "sunsim", "files": ledger})


def _read_ledger(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return dict(files) if isinstance(files, dict) else {}


def _has_entries(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(True for _ in it)


