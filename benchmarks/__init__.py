"""Benchmarks for jupyter-tether: every promise measured beside what users would use instead.

Run ``python -m benchmarks`` (or ``make bench``); see ``benchmarks/README.md``.
"""
