"""The CLI starts instantly: building the parser (``--help``, ``--version``, a subcommand's ``--help``) imports
none of the heavy libraries; the handlers import what they need when they run."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sunsim

#: Never imported to print help: each costs a large share of a second on its own.
HEAVY = ("pandas", "pyarrow", "matplotlib")
#: Not imported either today (the schema, numpy and the simulator load in the handlers); kept out so that
#: ``sunsim --help`` stays about as fast as ``python -c pass`` plus rich.
SCHEMA_AND_SIMULATOR = ("pydantic", "numpy", "simpy", "sunsim.scenario", "sunsim.sim", "sunsim.costs.model")


def imported_modules(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m sunsim ARGV`` and return it with the names of every module it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sunsim", *argv],
                          capture_output=True, text=True, timeout=120)
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    names.discard("imported package")  # the header line
    return proc, names


def _under(names: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("argv", [("--help",), ("--version",), ("run", "--help"), ("plan", "--help"),
                                  ("sweep", "--help"), ("cost", "--help")])
def test_help_imports_no_heavy_library(argv: tuple[str, ...]) -> None:
    proc, names = imported_modules(*argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sunsim.cli.main" in names, "importtime output not parsed"  # the check below is not vacuous
    assert _under(names, HEAVY) == []
    assert _under(names, SCHEMA_AND_SIMULATOR) == []


def test_version_prints_the_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "sunsim", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"sunsim {sunsim.__version__}"


def _subcommands() -> list[str]:
    from sunsim.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


def test_the_subcommands_are_all_found() -> None:
    assert {"run", "sweep", "plan", "experiments", "report", "calibrate", "cost", "validate"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_exits_0(command: str, capsys: pytest.CaptureFixture) -> None:
    from sunsim.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: sunsim {command}")


def test_lora_bands_in_the_parser_are_the_cost_models() -> None:
    """``calibration.cli`` spells the bands out so that ``--help`` needs no numpy; they must stay the same."""
    from calibration.cli import LORA_BANDS, LORA_DEFAULT_BAND
    from sunsim.costs.lora import BANDS, DEFAULT_BAND

    assert LORA_BANDS == BANDS and LORA_DEFAULT_BAND == DEFAULT_BAND


def test_a_reader_leaving_early_ends_the_command_quietly() -> None:
    """``sunsim cost ... | head``: the pipe closes before the answer is written; no traceback, SIGPIPE's status."""
    proc = subprocess.Popen([sys.executable, "-m", "sunsim", "cost", "--profile", "analytic-h100", "--model",
                             "llama-3.1-8b", "--phase", "decode", "--batch", "64", "--context", "2048"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the child, still importing, writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
