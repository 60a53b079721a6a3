"""The benchmarks: one script per service, run as ``.venv/bin/python bench/<name>.py``.

A package so that the scripts share ``bench.support`` and mypy checks them under one name each.
"""
