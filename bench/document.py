"""docs/benchmarks.md, from the sections of one run: a header, the machine, each section's own
Markdown, and how to run it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.core import Section, table

HOW_TO_RUN = """\
## Running it

<!-- excerpt: benchmark runs take minutes; CI runs python -m bench --smoke --no-write (.ci/run) -->
```bash
bash scripts/bench                  # set up .venv with the dev, bench and ray extras, then run it all
python -m bench                     # every section: docs/benchmarks.md, docs/bench/*.png, bench/results/
python -m bench --section lookup    # one section (--section again for more): prints it, saves its JSON
python -m bench --list              # the sections, in the order they run
python -m bench --smoke --no-write  # tiny counts, writes nothing: what CI runs to check that it runs
```

`--smoke` runs tiny counts. `--no-write` only prints the Markdown (no docs, no JSON; the plots are
drawn and discarded). Only a full run of every section writes `docs/benchmarks.md`; `--output
PATH` writes the Markdown of any run there (the plots go to `bench/` beside it). The raw results
of every section (its figures' samples, its errors) go to `bench/results/<UTC time>-<profile>.json`
(ignored by git), or to `--json PATH`. `--only h,i` is `--section` by letter. A section's options
come from the environment, `BENCH_<SECTION>_<OPTION>`, for example `BENCH_PARKED_TRACKERS=20000
python -m bench --section parked`; each section's text lists its own. The gevent pool needs
`gevent` (the `dev` and `bench` extras), the plots `matplotlib` (the `bench` extra); the Ray peer
needs the `ray` extra, and without it is reported as not run. PostgreSQL, Redis and RabbitMQ must
listen on 127.0.0.1 (the `docker-compose.yml` services). A run creates a database
`tracking_bench_<id>`, a Redis key prefix `tracking-bench-<id>:` (every queue on Redis lives under
it) and RabbitMQ queues `tracking-bench-<id>-*` of its own and removes them at the end, whatever
happens; workers still running are stopped with SIGTERM, then SIGKILL, on their process group;
Ray's processes are shut down and its session folder (in the run's temporary folder) removed.
"""

NOTES = """\
Percentiles are interpolated between ranks (`statistics.quantiles`, inclusive); with a few dozen
samples p99 is close to the maximum. A run is marked noisy when the 1-minute load average is above
3 at its start or end, or in more than 10% of the samples taken every 2 s while it ran.
"""


def markdown(sections: Sequence[Section], run: dict[str, Any]) -> str:
    load = run["load"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run["started"]))
    status = "**noisy**: " + "; ".join(load["reasons"]) if load["noisy"] else "not noisy"
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/`; do not edit by hand, run it again. Each figure stands next to its",
        "baseline measured in the same run, on the same machine and services.",
        "",
        f"- Command (from the repository root): `{run['command']}`",
        f"- Run: {when}, {run['duration']:.0f} s, {run['profile']} profile; {status}",
        f"- {load['line']}",
    ]
    failed = [s.name for s in sections if s.errors]
    if failed:
        lines.append(f"- **Failed sections**: {', '.join(failed)} (their figures are missing)")
    if run.get("plots_note"):
        lines.append(f"- {run['plots_note']}")
    goals = [
        (goal, measured, verdict, s.title.split(" ", 1)[0])
        for s in sections
        for goal, measured, verdict in s.goals
    ]
    if goals:
        lines += [
            "",
            "## Goals",
            "",
            "Issue 13's goals, as judged by this run (each section below has the details).",
            "",
        ]
        lines.append(table(("goal", "measured", "verdict", "section"), goals))
    lines += ["", "## Machine", "", table(("", ""), run["machine"]), ""]
    return (
        "\n".join(lines) + "\n" + "\n".join(s.render() for s in sections) + "\n" + NOTES + "\n" + HOW_TO_RUN
    )
