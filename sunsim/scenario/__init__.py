"""The scenario: a validated description of one experiment (model, hardware, serving, workload, SLO,
variants), read from YAML with ``--set`` overrides, and the files it names.
"""
