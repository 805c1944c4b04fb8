"""Bad input fails with a ValueError naming the field, and leaves no files behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from calibration.calibrate import Request, calibrate
from calibration.commands import load_shape, predict
from calibration.errors import CalibrationError
from sunsim.costs.architecture import preset
from sunsim.costs.model import ProfileError
from sunsim.output import mark


def _req(out: Path, **kw) -> Request:
    return Request(**{"shape": preset("tiny"), "dtypes": ["bf16"], "out": out, **kw})


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="model.preset"):
        load_shape("llama-9000")


@pytest.mark.parametrize(("kw", "field"), [
    ({"dtypes": ["int3"]}, "dtypes"), ({"dtypes": []}, "dtypes"), ({"layers": 5}, "layers"),
    ({"device": "tpu"}, "device"), ({"grid": "huge"}, "grid"), ({"repeats": 0}, "repeats"),
])
def test_bad_request_leaves_no_files(tmp_path: Path, kw: dict, field: str) -> None:
    out = tmp_path / "p"
    with pytest.raises(CalibrationError, match=field):
        calibrate(_req(out, **kw), progress=False)
    assert not out.exists()


def test_unwritable_or_file_output(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CalibrationError, match="out"):
        calibrate(_req(f), progress=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(CalibrationError, match="out"):
            calibrate(_req(ro / "p"), progress=False)
        assert not (ro / "p").exists()
    finally:
        os.chmod(ro, 0o700)


def test_output_of_another_model_refused(tmp_path: Path) -> None:
    out = tmp_path / "p"  # an earlier calibration's folder, of another model
    out.mkdir()
    mark(out, {"command": "calibrate"})
    (out / "metadata.json").write_text(json.dumps({"model": preset("qwen3-8b").as_dict(), "device": {"type": "cpu"}}))
    with pytest.raises(CalibrationError, match="qwen3-8b"):
        calibrate(_req(out), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".sunsim-run.json", "metadata.json"]


def test_corrupt_and_mismatched_profiles(tmp_path: Path) -> None:
    bad = tmp_path / "profile.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="hardware.profile"):
        predict(str(bad), "tiny", "bf16", "decode", 1, 128, 1)
    other = {"format": "sunsim-profile/1", "name": "x", "device": {"name": "cpu"}, "model": preset("qwen3-8b").as_dict(),
             "dtypes": {"bf16": {}}}
    bad.write_text(json.dumps(other))
    # Another model and no device figures to derive from: refused, naming the profile's model.
    with pytest.raises(ProfileError, match="qwen3-8b"):
        predict(str(bad), "tiny", "bf16", "decode", 1, 128, 1)
    with pytest.raises(ProfileError, match="int4"):
        predict(str(bad), "tiny", "int4", "decode", 1, 128, 1)
    with pytest.raises(CalibrationError, match="batch"):
        predict("analytic-h100", "tiny", "bf16", "decode", 0, 128, 1)
    with pytest.raises(ValueError, match="hardware.gpu"):
        predict("analytic-v100", "tiny", "bf16", "decode", 1, 128, 1)
