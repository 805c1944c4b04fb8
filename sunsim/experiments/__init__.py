"""The committed experiments behind ``results/`` and the computed claims of ``results/README.md``.

:mod:`~sunsim.experiments.pipeline` runs them and writes the page; :mod:`~sunsim.experiments.paper` and
:mod:`~sunsim.experiments.beyond` hold the two families' figures and findings,
:mod:`~sunsim.experiments.claims` the headline and the paper's claims, :mod:`~sunsim.experiments.readme`
the page itself.
"""

from sunsim.experiments.pipeline import EXPERIMENTS, regenerate

__all__ = ["EXPERIMENTS", "regenerate"]
