"""Run the benchmark suite: ``python -m bench [--only a,b] [--quick] [--out docs/benchmarks.md]``.

Prints one rich table per workload and writes ``docs/benchmarks.md`` (plus
``docs/benchmarks.json``, from which ``--only`` keeps the figures of the
workloads it does not re-run, and ``docs/img/*.png``).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback
from pathlib import Path

from . import report
from .common import REPO, Context, Section, Skip, git_revision, load_average, machine, skipped_section

#: Workload keys in report order, with their modules.
WORKLOADS = [
    ("call_cost", "bench.call_cost"),
    ("durable_mode", "bench.durable_mode"),
    ("profile", "bench.profile_hot_path"),
    ("kafka_throughput", "bench.kafka_throughput"),
    ("ship_throughput", "bench.ship_throughput"),
    ("tail_throughput", "bench.tail_throughput"),
    ("memory_outage", "bench.memory_outage"),
    ("latency_to_search", "bench.latency_to_search"),
    ("peers_file_kafka", "bench.peers_file_kafka"),
    ("es_ceiling", "bench.es_ceiling"),
    ("peers_kafka_es", "bench.peers_kafka_es"),
    ("ship_scale", "bench.ship_scale"),
    ("before_after", "bench.before_after"),
]
KEYS = [k for k, _ in WORKLOADS]


def run_one(key: str, module_name: str, ctx: Context) -> Section:
    module = importlib.import_module(module_name)
    started = time.perf_counter()
    ctx.say(f"{key}: start")
    try:
        section: Section = module.run(ctx)
    except Skip as exc:
        section = skipped_section(key, module.TITLE, str(exc))
    except Exception as exc:  # a broken workload must not lose the others' figures
        traceback.print_exc()
        section = skipped_section(key, module.TITLE, f"failed: {type(exc).__name__}: {exc}")
    section.seconds = section.seconds or time.perf_counter() - started
    section.when = report.now()
    section.quick = ctx.quick
    suffix = f" ({section.skipped})" if section.skipped else ""
    ctx.say(f"{key}: done in {time.perf_counter() - started:.0f} s{suffix}")
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma list of workloads: {', '.join(KEYS)}")
    parser.add_argument("--skip", default="", help="comma list of workloads not to run")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run; figures not representative)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown report to write")
    parser.add_argument("--no-write", action="store_true", help="print the tables, write nothing")
    parser.add_argument("--fresh", action="store_true", help="do not keep figures of workloads not re-run")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    only = [k.strip() for k in args.only.split(",") if k.strip()] or KEYS
    skip = {k.strip() for k in args.skip.split(",") if k.strip()}
    unknown = sorted((set(only) | skip) - set(KEYS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(KEYS)}")
    chosen = [(k, m) for k, m in WORKLOADS if k in only and k not in skip]

    out: Path = args.out.resolve()
    ctx = Context(quick=args.quick, docs=out.parent, verbose=not args.quiet)
    load = load_average()
    ctx.say(f"load average {load:.2f}; workloads: {', '.join(k for k, _ in chosen)}")
    started, t0 = report.now(), time.perf_counter()
    sections = [run_one(k, m, ctx) for k, m in chosen]
    report.print_sections(sections)

    if not args.no_write:
        previous = None if args.fresh else report.load(out)
        command = "make bench"
        if sys.argv[1:] and argv is None:
            command = f"make bench  # this run: python -m bench {shlex.join(sys.argv[1:])}"
        runs = report.superseded((previous or {}).get("runs", []), [k for k, _ in chosen])
        runs.append(
            {
                "workloads": [k for k, _ in chosen],
                "started": started,
                "git": git_revision(),
                "load": load,
                "seconds": time.perf_counter() - t0,
                "quick": args.quick,
            }
        )
        doc = {
            "command": command,
            "machine": machine(),
            "runs": runs,
            "sections": report.merge(previous, sections, KEYS),
        }
        report.write(out, doc)
        ctx.say(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
