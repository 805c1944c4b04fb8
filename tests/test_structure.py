"""The simulator stays free of torch (only calibration may import it)."""

from __future__ import annotations

import subprocess
import sys


def test_simulator_and_cli_do_not_import_torch(tmp_path):
    code = (
        "import sys, pkgutil, importlib, sunsim\n"
        "for m in pkgutil.iter_modules(sunsim.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('sunsim.' + m.name)\n"
        "from sunsim.cli import build_parser\n"
        "build_parser()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
