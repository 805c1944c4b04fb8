"""The request stream: arrivals, per-model popularity and prompt/output lengths, from distributions or traces.
"""
