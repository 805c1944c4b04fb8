"""sunsim: a discrete-event simulator of disaggregated multi-model LLM serving.

It compares dedicated per-model decode pools with SUN shared decode pools (and QSUN, their
low-bit variant) on the same request stream, with step costs from an analytic roofline or
from real kernel timings (see ``calibration/``).
"""

__version__ = "0.1.0"
