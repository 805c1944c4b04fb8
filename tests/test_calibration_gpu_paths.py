"""The GPU code paths, checked on a CPU where they can be: batched attention, the Triton kernel under its
interpreter, gemlite's weight convention, row-wise fp8 quantization, and the fused elementwise pieces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from calibration.formats import FP8_MAX, hqq_int4, quantize_rowwise_fp8  # noqa: E402
from calibration.kvcache import KVCache, check_backend, pick_backend  # noqa: E402

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def test_masked_batched_attention_matches_per_sequence_reference() -> None:
    check = check_backend("sdpa-masked", CPU, kv_heads=2, head_dim=32, heads=8)
    assert check["ok"], check
    assert check["max_abs_err"] < 1e-2


def test_pick_backend_on_cpu_and_forced_choice() -> None:
    assert pick_backend(CPU, 2, 32, 8)[0] == "sdpa-loop"
    name, checks = pick_backend(CPU, 2, 32, 8, prefer="sdpa-masked")
    assert name == "sdpa-masked" and checks["sdpa-masked"]["ok"]
    with pytest.raises(ValueError, match="attention"):
        pick_backend(CPU, 2, 32, 8, prefer="flash9")


def test_kv_write_lands_in_the_slot_and_position() -> None:
    cache = KVCache(4, 16, 2, 8, CPU, "sdpa-loop")
    k = torch.full((2, 2, 8), 7.0, dtype=torch.bfloat16)
    cache.write(torch.tensor([3, 1]), torch.tensor([5, 0]), k, -k)
    assert (cache.k[3, :, 5] == 7).all() and (cache.v[1, :, 0] == -7).all()
    assert not (cache.k[3, :, 4] == 7).all()


TRITON_CHECK = """
import torch
from calibration.kvcache import check_backend
r = check_backend("triton-paged", torch.device("cpu"), kv_heads=2, head_dim=32, heads=8, dtype=torch.float16)
print(r)
assert r["ok"], r
"""


def test_triton_paged_kernel_under_the_interpreter() -> None:
    """The Triton kernel against the per-sequence reference, run by Triton's CPU interpreter (fp16: the
    interpreter mishandles bf16, which the GPU start-up check covers)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_gemlite_int4_convention_reconstructs_the_weight() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 256)
    w_q, scales, zeros = hqq_int4(w)
    assert w_q.dtype == torch.uint8 and int(w_q.max()) <= 15 and scales.shape == (64, 2)
    deq = ((w_q.float().reshape(64, 2, 128) - zeros.float()[..., None]) * scales.float()[..., None]).reshape(64, 256)
    assert ((deq - w).norm() / w.norm()).item() < 0.12  # 4-bit groups of 128: ~10% relative error


def test_rowwise_fp8_quantization() -> None:
    x = torch.randn(5, 64) * torch.tensor([1.0, 10.0, 100.0, 0.1, 1e-3])[:, None]
    xq, scale = quantize_rowwise_fp8(x.to(torch.bfloat16))
    assert scale.shape == (5, 1) and xq.dtype == torch.float8_e4m3fn
    assert xq.float().abs().amax(1).sub(FP8_MAX).abs().max() < 1  # each row uses the full range
    rel = ((xq.float() * scale - x).norm(dim=1) / x.norm(dim=1)).max()
    assert rel < 0.06


@pytest.mark.slow
def test_fused_elementwise_matches_eager_decode() -> None:
    """torch.compile of the elementwise pieces (slow to compile on a CPU) computes what eager does."""
    from calibration.model import DecodeBatch, Stack
    from sunsim.costs.architecture import preset

    shape = preset("tiny")
    outs = []
    for fuse in (False, True):
        stack = Stack(shape, "bf16", 2, CPU, 256, seed=1, fuse=fuse)
        torch.manual_seed(0)
        caches = [KVCache(2, 64, shape.kv_heads, shape.head_dim, CPU, "sdpa-loop") for _ in range(2)]
        with torch.inference_mode():
            x = stack.io.lookup(torch.tensor([3, 9]))
            step = DecodeBatch([1, 0], [10, 40], CPU)
            for layer, cache in zip(stack.layers, caches):
                x = layer.decode(x, stack.rope, cache, step)
            outs.append(x.float())
    assert torch.allclose(outs[0], outs[1], atol=5e-2, rtol=5e-2)
