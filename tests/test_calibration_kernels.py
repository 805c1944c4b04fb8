"""Weight formats and decode attention compute the right thing, and low-bit formats are smaller."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from calibration.errors import CalibrationError, UnsupportedFormat  # noqa: E402
from calibration.formats import make_linear, unsupported_reason  # noqa: E402
from calibration.kvcache import KVCache  # noqa: E402
from calibration.model import DecodeBatch, Stack  # noqa: E402
from sunsim.costs.architecture import preset  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize(("fmt", "tol"), [("bf16", 0.02), ("int8", 0.03), ("int4", 0.2)])
def test_linear_formats_match_reference(fmt: str, tol: float) -> None:
    torch.manual_seed(0)
    w = torch.randn(256, 512)
    x = torch.randn(8, 512)
    ref = x @ w.T
    y = make_linear(w, fmt)(x.to(torch.bfloat16)).float()
    assert y.shape == ref.shape
    # int4 with groups of 128 has ~10% relative error on Gaussian weights; int8 ~1%.
    assert ((y - ref).norm() / ref.norm()).item() < tol


def test_low_bit_weights_are_smaller() -> None:
    w = torch.randn(512, 1024)
    sizes = {f: make_linear(w, f).weight_bytes for f in ("bf16", "int8", "int4")}
    assert sizes["int4"] < sizes["int8"] < sizes["bf16"]
    assert sizes["int4"] < 0.3 * sizes["bf16"]


def test_fp8_refused_on_cpu_with_reason() -> None:
    assert "compute capability" in unsupported_reason("fp8", CPU)
    with pytest.raises(UnsupportedFormat, match="dtypes"):
        make_linear(torch.randn(32, 128), "fp8")
    with pytest.raises(CalibrationError, match="int3"):
        unsupported_reason("int3", CPU)


def test_decode_attention_reads_each_sequence_only() -> None:
    torch.manual_seed(0)
    cache = KVCache(3, 40, kv_heads=2, head_dim=16, device=CPU, backend="sdpa-loop")
    q = torch.randn(2, 4, 16, dtype=torch.bfloat16)
    cache.k.uniform_(-1, 1)
    slots, lengths = [2, 0], [33, 5]
    out = cache.attend(q, slots, lengths, torch.tensor(slots), torch.tensor(lengths))
    for i, (s, n) in enumerate(zip(slots, lengths)):
        k = cache.k[s, :, :n].float().repeat_interleave(2, 0)  # [heads, n, d]
        v = cache.v[s, :, :n].float().repeat_interleave(2, 0)
        att = torch.softmax(q[i].float()[:, None] @ k.transpose(1, 2) / 4.0, -1) @ v
        assert torch.allclose(out[i].float(), att.reshape(-1), atol=3e-2)


def test_stack_decode_and_prefill_run_in_every_cpu_format() -> None:
    shape = preset("tiny")
    for fmt in ("bf16", "int8", "int4"):
        stack = Stack(shape, fmt, 2, CPU, 256)
        with torch.inference_mode():
            first = stack.prefill(torch.randint(0, shape.vocab, (2, 32)))
            caches = [KVCache(2, 64, shape.kv_heads, shape.head_dim, CPU, "sdpa-loop") for _ in range(2)]
            step = DecodeBatch([1, 0], [10, 40], CPU)
            nxt = stack.decode(first, caches, step)
        assert first.shape == nxt.shape == (2,)
        assert step.kv_tokens == 50
