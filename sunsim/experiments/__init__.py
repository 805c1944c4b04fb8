"""The committed experiments behind ``results/`` and the computed claims of ``results/README.md``.
"""
