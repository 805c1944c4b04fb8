"""Hostile input to the calibration commands: every bad shape, file, size or device is refused with a
message naming what to fix (exit 2), never a traceback, a non-finite or negative time, or a misleading
"time budget" error; and the GPU scripts carry what they need and name their outputs by the device."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from calibration import triton_attention  # noqa: E402
from calibration.calibrate import Request, calibrate  # noqa: E402
from calibration.commands import load_shape, predict  # noqa: E402
from calibration.errors import CalibrationError  # noqa: E402
from sunsim.cli.main import main  # noqa: E402
from sunsim.costs.architecture import preset  # noqa: E402
from sunsim.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "calibration" / "profiles"
H100 = ROOT / "calibration" / "measurements" / "h100-2026-11-27"
TINY = {"name": "t", "hidden": 256, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 64, "intermediate": 512,
        "vocab": 1024}
NO_CUDA = not torch.cuda.is_available()


def _shape_file(tmp_path: Path, **patch) -> Path:
    path = tmp_path / "shape.json"
    path.write_text(json.dumps({**TINY, **patch}))
    return path


# --- 1. cost: never a non-finite, negative or zero time ---------------------------------------------
def _profile_sloping_down(tmp_path: Path) -> Path:
    """cpu-tiny with its last decode and prefill table points below the ones before: the extrapolation
    past the measured range runs negative (noise can do this where a table is nearly flat)."""
    prof = json.loads((PROFILES / "cpu-tiny" / "profile.json").read_text())
    d = prof["dtypes"]["bf16"]
    d["decode"]["alpha_s"][-1] = 1e-6
    d["prefill"]["linear_s"][-1] = 1e-6
    out = tmp_path / "sloping"
    out.mkdir()
    (out / "profile.json").write_text(json.dumps(prof))
    return out


@pytest.mark.parametrize(("phase", "batch", "tokens", "field"), [("decode", 4096, 1, "batch"),
                                                                  ("prefill", 1000, 100, "tokens")])
def test_cost_refuses_a_negative_extrapolation(tmp_path: Path, phase: str, batch: int, tokens: int,
                                                field: str, capsys: pytest.CaptureFixture) -> None:
    prof = str(_profile_sloping_down(tmp_path))
    with pytest.raises(CalibrationError, match=rf"{field}: .*beyond the profile's measured"):
        predict(prof, "tiny", "bf16", phase, batch, 1, tokens)
    assert main(["cost", "--profile", prof, "--model", "tiny", "--phase", phase, "--batch", str(batch),
                 "--context", "1", "--tokens", str(tokens)]) == 2
    assert "time_ms" not in capsys.readouterr().out
    assert predict(prof, "tiny", "bf16", phase, 4, 128, 128)["time_ms"] > 0  # inside the range: fine


@pytest.mark.parametrize("patch", [{"hidden": 10**200}, {"intermediate": 10**12}, {"vocab": 10**30},
                                   {"layers": 10**12}, {"heads": 10**7, "kv_heads": 1}, {"head_dim": 10**400}])
@pytest.mark.parametrize("profile", ["analytic-h100", str(PROFILES / "cpu-tiny"), str(PROFILES / "cpu-llama-3.1-8b")])
def test_cost_refuses_absurd_dimensions_by_name(tmp_path: Path, patch: dict, profile: str) -> None:
    shape = _shape_file(tmp_path, **patch)
    field = next(iter(patch))
    with pytest.raises(CalibrationError, match=rf"model\.{field}"):
        predict(profile, str(shape), "bf16", "decode", 1, 128, 128)


@pytest.mark.parametrize(("kw", "field"), [({"batch": 10**300}, "batch"), ({"context": 10**300}, "context"),
                                           ({"tokens": 10**300}, "tokens"), ({"batch": 10**6}, "batch")])
def test_cost_refuses_absurd_counts_by_name(kw: dict, field: str) -> None:
    args = {"batch": 1, "context": 128, "tokens": 128, **kw}
    phase = "prefill" if field == "tokens" else "decode"
    with pytest.raises(CalibrationError, match=rf"^{field}: "):
        predict("analytic-h100", "llama-3.1-8b", "bf16", phase, args["batch"], args["context"], args["tokens"])


def test_cost_is_finite_and_positive_at_every_extreme(tmp_path: Path) -> None:
    """Every dimension at 1 or at its bound, every count at 1 or at its bound, on every committed profile
    (calibrated or derived) and the analytic model: a finite positive time, or an input error."""
    profiles = ["analytic-h100", str(PROFILES / "cpu-tiny"), str(PROFILES / "cpu-llama-3.1-8b"),
                str(H100 / "h100-llama-3.1-8b-bf16"), str(H100 / "h100-llama-3.1-8b-int4")]
    big = {"hidden": 1_000_000, "layers": 10_000, "heads": 10_000, "kv_heads": 10_000, "head_dim": 10_000,
           "intermediate": 10_000_000, "vocab": 100_000_000}
    small = dict.fromkeys(big, 1)
    shapes = [small, big, {**TINY, "hidden": 1}, {**TINY, "vocab": 1, "intermediate": 1}, {**big, "layers": 1},
              {**small, "layers": 10_000}]
    checked = 0
    for i, s in enumerate(shapes):
        path = tmp_path / f"s{i}.json"
        path.write_text(json.dumps({"name": f"s{i}", **s}))
        for prof in profiles:
            dtype = "int4" if prof.endswith("int4") else "bf16"
            for phase in ("decode", "prefill"):
                for batch, n in ((1, 1), (100_000, 10_000_000), (100_000, 1), (1, 10_000_000)):
                    try:
                        ms = predict(prof, str(path), dtype, phase, batch, n, n)["time_ms"]
                    except InputError:
                        continue
                    assert math.isfinite(ms) and ms > 0, (prof, s, phase, batch, n, ms)
                    checked += 1
    assert checked > 50


# --- 2. shape files: integers only, booleans are not numbers ----------------------------------------
@pytest.mark.parametrize(("patch", "field"), [
    ({"hidden": 256.5}, "hidden"), ({"layers": True}, "layers"), ({"heads": 4.0}, "heads"),
    ({"vocab": "1024"}, "vocab"), ({"kv_heads": None}, "kv_heads"), ({"head_dim": [64]}, "head_dim"),
    ({"tied_embeddings": 1}, "tied_embeddings"), ({"name": 7}, "name"), ({"hiden": 256}, "hiden"),
    ({"intermediate": 0}, "intermediate"), ({"layers": -2}, "layers"),
])
def test_shape_file_fields_must_be_integers(tmp_path: Path, patch: dict, field: str,
                                            capsys: pytest.CaptureFixture) -> None:
    shape = _shape_file(tmp_path, **patch)
    with pytest.raises(CalibrationError, match=rf"model\.{field}"):
        load_shape(str(shape))
    assert main(["cost", "--profile", "analytic-h100", "--model", str(shape), "--phase", "decode"]) == 2
    assert "time_ms" not in capsys.readouterr().out


def test_shape_file_missing_field_and_non_object(tmp_path: Path) -> None:
    shape = tmp_path / "s.json"
    shape.write_text(json.dumps({k: v for k, v in TINY.items() if k != "vocab"}))
    with pytest.raises(CalibrationError, match=r"model\.vocab"):
        load_shape(str(shape))
    shape.write_text("[1, 2]")
    with pytest.raises(CalibrationError, match="JSON object"):
        load_shape(str(shape))
    with pytest.raises(CalibrationError, match="no shape file"):
        load_shape(str(tmp_path / "absent.json"))


# --- 3. unreadable files: a clean error, exit 2 --------------------------------------------------------
@pytest.mark.parametrize("content", [b'{"name": "\xff\xfe", "hidden": 256}', b"\x89PNG\r\n\x1a\n\x00\x00",
                                     b"[" * 100_000, b'{"hidden": ' + b"9" * 5000 + b"}"])
def test_unreadable_shape_file_is_a_clean_error(tmp_path: Path, content: bytes,
                                                capsys: pytest.CaptureFixture) -> None:
    shape = tmp_path / "shape.json"
    shape.write_bytes(content)
    with pytest.raises(CalibrationError, match="model"):
        load_shape(str(shape))
    assert main(["cost", "--profile", "analytic-h100", "--model", str(shape), "--phase", "decode"]) == 2
    assert main(["calibrate", "--model", str(shape), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert not (tmp_path / "p").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_non_utf8_model_config_and_profile_are_clean_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "m" / "config.json"
    cfg.parent.mkdir()
    cfg.write_bytes(b'{"model_type": "llama", "hidden_size": 4096, "_name_or_path": "\xe9t\xe9"}')
    with pytest.raises(CalibrationError, match="UTF-8"):
        load_shape(str(cfg))
    hf = ROOT / "tests" / "data" / "hf" / "llama-3.1-8b" / "config.json"
    assert load_shape(str(hf)).layer_linear_params == preset("llama-3.1-8b").layer_linear_params
    prof = tmp_path / "prof"
    prof.mkdir()
    (prof / "profile.json").write_bytes(b'{"format": "sunsim-profile/1", "name": "\xff"}')
    with pytest.raises(InputError, match="profile"):
        predict(str(prof), "tiny", "bf16", "decode", 1, 1, 1)
    assert main(["cost", "--profile", str(prof), "--model", "tiny", "--phase", "decode"]) == 2
    assert main(["validate", "--profile", str(prof), "--requests", "2"]) == 2


# --- 4. memory: refused up front with the estimate, naming the shape fields --------------------------
def test_shape_too_large_for_memory_is_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shape = _shape_file(tmp_path, name="huge", vocab=8_000_000, hidden=8192, heads=64, kv_heads=8, head_dim=128,
                        intermediate=28672)
    out = tmp_path / "p"
    with pytest.raises(CalibrationError, match=r"needs about [\d.]+ GB.*model\.vocab.*model\.hidden") as err:
        calibrate(Request(shape=load_shape(str(shape)), dtypes=["bf16"], out=out), progress=False)
    assert "cap" in str(err.value) or "memory" in str(err.value)
    assert not out.exists()
    assert main(["calibrate", "--model", str(shape), "--out", str(out), "--time-budget", "30", "--quiet"]) == 2
    assert "GB" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("p-*")) and not list(tmp_path.glob(".p*"))


def test_memory_estimate_covers_what_is_allocated() -> None:
    from calibration.grid import preset_grid
    from calibration.memory import estimate_bytes

    tiny = preset("tiny")
    est = estimate_bytes(tiny, preset_grid("cpu", "quick"), 2, ["bf16"], "cpu")
    weights = 2 * tiny.layer_linear_params * 2 + 2 * tiny.vocab * tiny.hidden * 2
    kv = 2 * (2 * 16 * 2049 * tiny.kv_heads * tiny.head_dim * 2)  # two rotated caches, batch 16, context 2048
    assert est["total"] >= weights + kv
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    assert est["total"] < 1e9


# --- 5. the triton-paged start-up check: a clean error or a recorded fallback -------------------------
def test_forced_triton_backend_failing_its_check_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("0 active drivers ([]). There should only be one.")

    monkeypatch.setattr(triton_attention, "paged_decode_attention", broken)
    out = tmp_path / "p"
    with pytest.raises(CalibrationError, match=r"attention: .*triton-paged.*start-up check.*active drivers"):
        calibrate(Request(shape=preset("tiny"), dtypes=["bf16"], out=out, attention="triton-paged"), progress=False)
    assert not out.exists()
    assert main(["calibrate", "--model", "tiny", "--dtypes", "bf16", "--attention", "triton-paged",
                 "--out", str(out), "--quiet"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_broken_triton_install_falls_back_with_the_reason(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "triton"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('libcuda.so cannot be found')\n")
    code = ("import torch\nfrom calibration import kvcache, triton_attention\n"
            "assert not triton_attention.available()\n"
            "print('reason', triton_attention.unavailable_reason())\n"
            "try:\n    kvcache.pick_backend(torch.device('cpu'), 2, 32, 8, prefer='triton-paged')\n"
            "except kvcache.CalibrationError as exc:\n    print('refused', exc)\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{ROOT}")
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reason RuntimeError: libcuda.so cannot be found" in res.stdout
    assert "refused attention: " in res.stdout and "libcuda.so" in res.stdout


# --- 6. no CUDA: said up front (exit 2), not blamed on the time budget --------------------------------
@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
def test_cuda_requested_without_a_gpu_fails_up_front(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p"
    with pytest.raises(CalibrationError, match="device: .*no CUDA GPU"):
        calibrate(Request(shape=preset("tiny"), dtypes=["bf16", "int8"], device="cuda", out=out, time_budget=30),
                  progress=False)
    assert main(["calibrate", "--model", "tiny", "--dtypes", "bf16,int8", "--device", "cuda", "--time-budget", "30",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "time budget" not in err
    assert list(tmp_path.iterdir()) == []


def _gpu_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("OUT", "ARCHIVE", "DEVICE_NAME")}
    full.update({"ROOT": str(tmp_path / "work"), "PYTHON": sys.executable, "BUDGET": "60",
                 "OUT": str(tmp_path / "env-out"), **env})
    return subprocess.run(["bash", str(ROOT / "calibration" / "gpu_run.sh"), *args], env=full, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
def test_gpu_run_without_cuda_stops_at_once_with_exit_2(tmp_path: Path) -> None:
    res = _gpu_run(tmp_path, "--out", str(tmp_path / "o"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no CUDA GPU" in res.stdout + res.stderr
    assert "time budget" not in res.stdout + res.stderr
    assert not (tmp_path / "work").exists()


# --- 7. fetch_wheels.sh carries every runtime dependency ---------------------------------------------
FETCH = ROOT / "calibration" / "fetch_wheels.sh"
#: gemlite 0.6.0.post2's install_requires (its setup.py / METADATA Requires-Dist).
GEMLITE_REQUIRES = ("numpy", "tqdm", "triton")


def _fetch_lists() -> tuple[set[str], set[str]]:
    """(packages the script fetches, packages it relies on the image for), from its text."""
    text = FETCH.read_text()
    fetched = {m.group(1).lower() for m in re.finditer(r"\b([A-Za-z][\w.-]*)==[\w.]+", text)}
    image = re.search(r"^IMAGE=\(([^)]*)\)", text, re.M)
    assert image, "fetch_wheels.sh must list the image's packages in IMAGE=(...)"
    return fetched, {p.lower() for p in image.group(1).split()}


def test_fetch_wheels_carries_gemlite_runtime_dependencies() -> None:
    assert subprocess.run(["bash", "-n", str(FETCH)]).returncode == 0
    fetched, image = _fetch_lists()
    assert "tqdm" in fetched and "gemlite" in fetched
    assert set(GEMLITE_REQUIRES) <= fetched | image
    for dep in ("annotated-types", "pydantic-core", "typing-extensions", "typing-inspection"):  # pydantic's
        assert dep in fetched
    assert "calibration.wheels" in FETCH.read_text()  # and it checks the downloaded METADATA itself


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    dist = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version
                   + "\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))


def test_wheel_dependency_check(tmp_path: Path) -> None:
    from calibration.wheels import unmet

    _fake_wheel(tmp_path, "gemlite", "0.6.0.post2", ["numpy", "tqdm", "triton>=3.6.0"])
    _fake_wheel(tmp_path, "pydantic", "2.14.4", ["typing-extensions>=4.14.1", "email-validator>=2.0; extra == 'email'"])
    _fake_wheel(tmp_path, "typing-extensions", "4.10.0", [])
    _fake_wheel(tmp_path, "tqdm", "4.70.1", ['colorama; platform_system == "Windows"'])
    problems = unmet(tmp_path, ["numpy", "triton", "torch"])
    assert problems == ["pydantic 2.14.4 needs typing-extensions>=4.14.1; the carried typing-extensions is 4.10.0"]
    (tmp_path / "tqdm-4.70.1-py3-none-any.whl").unlink()
    assert any("gemlite 0.6.0.post2 needs tqdm" in p for p in unmet(tmp_path, ["numpy", "triton"]))


# --- 8. gpu_run.sh: outputs named by the device, --out, the log packed once --------------------------
@pytest.mark.parametrize(("name", "slug"), [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA L40S", "l40s"), ("NVIDIA B200", "b200"), ("NVIDIA L4", "l4"),
    ("NVIDIA GH200 480GB", "gh200"), ("NVIDIA GeForce RTX 4090", "rtx4090"), ("Tesla V100-SXM2-16GB", "v100"),
    ("NVIDIA RTX 6000 Ada Generation", "rtx6000"), ("AMD Instinct MI300X", "mi300x"), ("Some New GPU!", "some-new-gpu"),
])
def test_device_slug(name: str, slug: str) -> None:
    from calibration.device import device_slug

    assert device_slug(name) == slug


def test_gpu_run_names_outputs_by_the_device(tmp_path: Path) -> None:
    script = ROOT / "calibration" / "gpu_run.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    res = _gpu_run(tmp_path, "--dry-run", "--out", str(tmp_path / "o"), DEVICE_NAME="NVIDIA H200")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{tmp_path / 'work'}/h200-llama-3.1-8b" in res.stdout
    assert f"{tmp_path / 'work'}/h200-qwen3-8b" in res.stdout
    assert f"{tmp_path / 'o'}/calibration-gpu.tar.gz" in res.stdout
    assert "h100" not in res.stdout
    res = _gpu_run(tmp_path, "--dry-run", DEVICE_NAME="NVIDIA A100-SXM4-80GB")  # no --out: $OUT
    assert f"{tmp_path / 'env-out'}/calibration-gpu.tar.gz" in res.stdout and "a100-llama-3.1-8b" in res.stdout
    assert _gpu_run(tmp_path, "--bogus").returncode == 2
    assert not (tmp_path / "work").exists()  # a dry run creates nothing
    assert "h100-" not in script.read_text()


def test_the_log_is_packed_once(tmp_path: Path) -> None:
    from calibration.pack import pack

    root = tmp_path / "work"
    (root / "h200-llama-3.1-8b-bf16").mkdir(parents=True)
    (root / "h200-llama-3.1-8b-bf16" / "profile.json").write_text("{}")
    (root / "log.txt").write_text("log\n")
    archive = tmp_path / "a.tar.gz"
    names = pack(archive, [*sorted(root.iterdir()), root / "log.txt"])
    with tarfile.open(archive) as tar:
        members = tar.getnames()
    assert members.count("log.txt") == 1 and names.count("log.txt") == 1
    text = (ROOT / "calibration" / "gpu_run.sh").read_text()
    assert not re.search(r"calibration\.pack[^\n]*log\.txt", text)


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python on a GPU machine: the device is an H200, calibrate writes one finished format.
case "$*" in
  "-m calibration.device slug"*) echo h200 ;;
  "-m calibration.pack"*) exec {real} "$@" ;;
  "-m sunsim calibrate"*)
    while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
    mkdir -p "$out-bf16" && echo '{{}}' > "$out-bf16/profile.json" && echo "calibrated $out" ;;
  *) echo "python $*" ;;
esac
"""


def test_gpu_run_end_to_end_with_a_stubbed_gpu(tmp_path: Path) -> None:
    """The whole script with python stubbed as an H200 machine: outputs named h200-..., the archive in
    --out, every output and the log (once) in it."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(real=sys.executable))
    fake.chmod(0o755)
    res = _gpu_run(tmp_path, "--out", str(tmp_path / "o"), PYTHON=str(fake), BUDGET="400")
    assert res.returncode == 0, res.stdout + res.stderr
    with tarfile.open(tmp_path / "o" / "calibration-gpu.tar.gz") as tar:
        members = tar.getnames()
    assert members.count("log.txt") == 1
    assert {"h200-llama-3.1-8b-bf16/profile.json", "h200-qwen3-8b-bf16/profile.json"} <= set(members)
    assert not any("h100" in m for m in members)


def test_gemlite_config_for_a_device_without_one() -> None:
    from calibration.formats import gemlite_config_choice

    shipped = ["4090", "5090", "6000_ada", "a100", "a40", "a6000", "h100", "l4", "l40", "l40s", "mi300x"]
    assert gemlite_config_choice("NVIDIA H100 80GB HBM3", (9, 0), shipped)[0] == "h100"
    assert gemlite_config_choice("NVIDIA L40S", (8, 9), shipped)[0] == "l40s"
    tag, note = gemlite_config_choice("NVIDIA H200", (9, 0), shipped)
    assert tag == "h100" and "H200" in note and "h100.json" in note
    tag, note = gemlite_config_choice("NVIDIA B200", (10, 0), shipped)
    assert tag is None and "autotune" in note


def test_readme_documents_the_gpu_run_options() -> None:
    text = (ROOT / "calibration" / "README.md").read_text()
    assert "gpu_run.sh --out" in text and "tqdm" in text and "H200" in text
