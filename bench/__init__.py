"""The benchmark of `tracking`, side by side with bare Celery, raw SQL, bare kombu and Ray.

Run it from the repository root with ``python -m bench`` (see ``bench/run.py``); it writes
``docs/benchmarks.md`` and its plots, ``docs/bench/*.png``.
"""
