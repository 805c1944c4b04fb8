"""Facts about the device a profile was measured on: name, memory, copy bandwidth, software versions."""

from __future__ import annotations

import os
import platform
import re
import sys

import torch

from .errors import CalibrationError
from .timing import Timer, TimingConfig


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise CalibrationError(f"device: must be 'cpu' or 'cuda', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CalibrationError(f"device: {name!r} requested but no CUDA GPU is visible to torch {torch.__version__}")
    return torch.device(name)


#: A GPU model in a device name: H100, H200, GH200, A100, A10G, L4, L40S, B200, V100, T4, RTX 4090, MI300X...
_MODEL = re.compile(r"\b(g[bh]\d{3}|rtx[ -]?\d{4}|mi\d{3}[a-z]?|[abhltv]\d{1,4}[a-z]?)\b")


def device_slug(name: str) -> str:
    """A short tag for file names from a device name, so outputs say which GPU made them:
    ``NVIDIA H100 80GB HBM3`` -> ``h100``, ``NVIDIA H200`` -> ``h200``, ``NVIDIA L40S`` -> ``l40s``; an
    unknown name is slugified whole."""
    low = name.lower()
    m = _MODEL.search(low)
    if m:
        return re.sub(r"[ -]", "", m.group(1))
    slug = re.sub(r"[^a-z0-9]+", "-", low).strip("-")[:40].strip("-")
    return slug or "gpu"


def set_cpu_threads(device: torch.device, threads: int | None) -> int | None:
    """Pin torch's CPU thread count (default 1, see ``Request.threads``); ``None`` on a GPU."""
    if device.type != "cpu":
        return None
    torch.set_num_threads(threads or 1)
    return torch.get_num_threads()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def copy_bandwidth(device: torch.device, nbytes: int) -> dict[str, float | None]:
    """Effective copy bandwidth, bytes/s; d2d counts read + write, as the design notes' 3.0 TB/s does."""
    timer = Timer(TimingConfig(device=device, warmup=1, repeats=5, min_sample_s=0.0, graphs=False))
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).fill_(1)
    dst = torch.empty_like(src)
    d2d = timer.measure(lambda: dst.copy_(src)).median_s
    out: dict[str, float | None] = {"d2d_Bps": 2 * nbytes / d2d, "h2d_Bps": None}
    if device.type == "cuda":
        host = torch.empty(nbytes // 2, dtype=torch.bfloat16).pin_memory()
        out["h2d_Bps"] = nbytes / timer.measure(lambda: dst.copy_(host, non_blocking=True)).median_s
    return out


def device_facts(device: torch.device, copy_bytes: int | None = None) -> dict:
    """Everything about the device a reader needs to judge a profile."""
    facts: dict = {"type": device.type, "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(name=p.name, memory_bytes=p.total_memory, compute_capability=f"{p.major}.{p.minor}",
                     multiprocessors=p.multi_processor_count, cuda=torch.version.cuda)
        copy_bytes = copy_bytes or 1 << 30
    else:
        facts.update(name=_cpu_name(), threads=torch.get_num_threads(), cores=os.cpu_count(),
                     memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), cuda=None)
        copy_bytes = copy_bytes or 256 << 20
    facts.update(copy_bandwidth(device, copy_bytes))
    return facts


def main(argv: list[str] | None = None) -> int:
    """``python -m calibration.device slug [NAME]``: the tag of NAME, else of the visible CUDA GPU (exit 2,
    with the reason, when there is none: the GPU scripts stop at once instead of failing every format)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "slug" or len(args) > 2:
        print("usage: python -m calibration.device slug [DEVICE_NAME]", file=sys.stderr)
        return 2
    if len(args) == 2:
        print(device_slug(args[1]))
        return 0
    if not torch.cuda.is_available():
        print(f"error: no CUDA GPU is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
              "the GPU calibration needs one (on a CPU: sunsim calibrate --device cpu)", file=sys.stderr)
        return 2
    print(device_slug(torch.cuda.get_device_name(0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
