"""The benchmark of `tracking`, side by side with bare Celery, raw SQL, bare kombu and Ray.

``python -m bench`` from the repository root (``bench/runner.py``; ``--list`` names the sections,
one module each). A full run writes ``docs/benchmarks.md`` and its plots, ``docs/bench/*.png``.
"""
