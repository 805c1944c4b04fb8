"""From per-request records to answers: metrics and summaries, the results schema, scenario runs,
sweeps and capacity planning.
"""
