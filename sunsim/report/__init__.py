"""Figures and Markdown reports of runs, sweeps and plans, and the Chrome/Perfetto trace of a run.
"""
