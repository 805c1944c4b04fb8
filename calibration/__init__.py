"""Kernel calibration for sunsim: time real decoder kernels and fit a ``sunsim-profile/1`` file.

This package may import torch (lazily, from the command handlers); :mod:`sunsim` never does,
so the simulator runs without it. See ``calibration/README.md``.
"""
