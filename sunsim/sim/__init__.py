"""The cluster simulation (SimPy): prefill and decode workers, the interconnect, routing, rebalancing,
and the assembly of one variant's cluster.
"""
