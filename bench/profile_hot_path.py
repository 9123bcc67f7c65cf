"""Profile logpipe's per-call path and measure proposed fixes before/after, in one run.

Two parts:

1. **Profile**: the chain (``logpipe.processors(exporter="memory")``, so the
   numbers are the application thread's work and not a client library's)
   runs under pyinstrument (cProfile when pyinstrument is missing); the
   functions with the most own time are listed.
2. **Before/after**: earlier revisions of ``src/logpipe`` (``REVISIONS``:
   before any hot-path work, and before the fixes this profile found) are
   exported with ``git archive``, imported under other names and measured
   against the working tree and plain structlog in interleaved rounds of the
   call-cost loop, so every figure comes from the same run.

Proposed fixes that are not applied yet can be put in ``bench/patches/*.diff``
(a series, applied in name order): each prefix of the series is applied to a
temporary copy of the tree and measured too; one the tree already contains is
reported as applied, one that no longer applies as stale.
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from . import call_cost
from .call_cost import Peer
from .common import REPO, Context, Section, fmt_num, fmt_ratio, median, spread, unpack_revision

KEY = "profile"
TITLE = "Profile of the log call and fixes, before/after"
PATCHES = Path(__file__).resolve().parent / "patches"
SRC = REPO / "src" / "logpipe"


# -- variants of the package ------------------------------------------------------------


def series_states(patches: list[Path], workdir: Path) -> dict[str, str]:
    """For each patch in order: ``applies`` on top of the tree and the earlier ones,
    ``applied`` (already in the tree), or ``stale`` (neither)."""
    root = workdir / "check"
    shutil.copytree(SRC, root / "src" / "logpipe", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(workdir)}
    states = {}
    for patch in patches:

        def git_apply(*extra: str, patch: Path = patch) -> bool:
            cmd = ["git", "apply", *extra, str(patch.resolve())]
            return subprocess.run(cmd, cwd=root, capture_output=True, env=env).returncode == 0

        if git_apply("--check"):
            git_apply()
            states[patch.name] = "applies"
        elif git_apply("-R", "--check"):
            states[patch.name] = "applied"
        else:
            states[patch.name] = "stale"
    shutil.rmtree(root)
    return states


#: Earlier revisions measured next to the working tree: (revision, what it was).
REVISIONS = [
    ("af37665", "before any hot-path work"),
    ("24a5ef2", "before the fixes this profile found (applied in 28218d5)"),
]


def load_revision(name: str, revision: str, workdir: Path) -> ModuleType | None:
    """src/logpipe as of *revision*, importable as *name*; None when git cannot produce it."""
    target = workdir / "pkgs" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    src = unpack_revision(revision, workdir, f"rev-{name}")
    if src is None:
        return None
    shutil.move(str(src / "logpipe"), str(target))
    if str(target.parent) not in sys.path:
        sys.path.insert(0, str(target.parent))
    return importlib.import_module(name)


def load_variant(name: str, patches: list[Path], workdir: Path) -> ModuleType:
    """A copy of src/logpipe with *patches* applied in order, importable as *name*."""
    root = workdir / name
    shutil.copytree(SRC, root / "src" / "logpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for patch in patches:
        # cwd is the copy, outside any git repository: git apply works on plain files there
        # (GIT_CEILING_DIRECTORIES: never let git find a repository above the copy)
        env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(workdir)}
        subprocess.run(["git", "apply", str(patch.resolve())], cwd=root, check=True, capture_output=True, env=env)
    pkgs = workdir / "pkgs"
    pkgs.mkdir(exist_ok=True)
    shutil.move(str(root / "src" / "logpipe"), str(pkgs / name))
    if str(pkgs) not in sys.path:
        sys.path.insert(0, str(pkgs))
    return importlib.import_module(name)


def chain_peer(mod: Any, key: str, label: str) -> Peer:
    """The logpipe chain of package *mod* to the discarding exporter, like call_cost's logpipe peer."""

    pipeline = call_cost.build_pipeline(mod, call_cost.discard_exporter(mod), service="bench")
    sink = open(os.devnull, "wb")  # noqa: SIM115
    call = call_cost.logpipe_call(pipeline, sink)

    def flush() -> None:
        pipeline.force_flush(30.0)

    def close() -> None:
        pipeline.shutdown(5.0)
        sink.close()

    return Peer(key, label, call, flush, close, f"{mod.__name__}, discarding exporter")


# -- profiling -------------------------------------------------------------------------------


def profile_chain(calls: int) -> tuple[list[dict[str, Any]], str]:
    """Own-time table of the chain, and which profiler made it."""
    import logpipe

    peer = chain_peer(logpipe, "logpipe", "logpipe")
    try:
        for i in range(2000):
            peer.log(i)
        peer.flush()
        try:
            from pyinstrument import Profiler
        except ImportError:
            return _cprofile(peer, calls), "cProfile"
        profiler = Profiler(interval=0.0001)
        profiler.start()
        for i in range(calls):
            peer.log(i)
        profiler.stop()
        peer.flush()
        return _pyinstrument_table(profiler), "pyinstrument"
    finally:
        peer.close()


def _pyinstrument_table(profiler: Any) -> list[dict[str, Any]]:
    session = profiler.last_session
    root = session.root_frame()
    own: dict[str, float] = {}

    def walk(frame: Any) -> None:
        label = f"{frame.function} ({_short(frame.file_path_short or frame.file_path or '?')}:{frame.line_no})"
        if frame.function and not frame.function.startswith("["):
            own[label] = own.get(label, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child)

    if root is not None:
        walk(root)
    total = sum(own.values()) or 1.0
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    return [{"function": k, "own time %": f"{v / total * 100:.1f}"} for k, v in rows]


def _cprofile(peer: Peer, calls: int) -> list[dict[str, Any]]:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for i in range(calls):
        peer.log(i)
    prof.disable()
    peer.flush()
    stats = pstats.Stats(prof, stream=io.StringIO())
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: -kv[1][2])[:15]
    return [
        {"function": f"{fn} ({_short(file)}:{line})", "own time %": f"{v[2] / total * 100:.1f}"}
        for (file, line, fn), v in rows
    ]


def _short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.basename(path)


# -- the workload --------------------------------------------------------------------------------


#: The commit that applied the fixes this profile found, and its parent.
FIXES = ("24a5ef2", "28218d5")


def fixes_note() -> str:
    """What the fixes were: the commit's diff of the hot-path files, folded."""
    before, after = FIXES
    diff = subprocess.run(
        [
            "git",
            "diff",
            before,
            after,
            "--",
            *(f"src/logpipe/{f}" for f in ("processors.py", "record.py", "dispatch.py")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if diff.returncode != 0 or not diff.stdout.strip():
        return f"The fixes this profile found are commit {after}."
    return (
        f"**The fixes.** Profiled on {before}, before these fixes, the chain showed no single dominant "
        "function but many small per-call costs, each removable without a change in behaviour: `Condition.notify` "
        "on every call once the queue passed a batch (the worker waits for the GIL), orjson's slower dict path for "
        "`OPT_NON_STR_KEYS` on every record, the named tuple's Python-level `__new__`, `format_time`'s dispatch on "
        "the format, a `ServiceName` call once the name is final, two helper calls in the stack walk, and the "
        "OpenTelemetry span lookup in an empty context. They were proposed as a patch series measured on a "
        f"patched copy, and applied in {after} (`git show {after}`):\n\n<details><summary>git diff {before} {after} "
        f"(hot-path files)</summary>\n\n```diff\n{diff.stdout.rstrip()}\n```\n\n</details>"
    )


def run(ctx: Context) -> Section:
    import logpipe

    started = time.perf_counter()
    rounds, calls, warmup = (3, 1000, 500) if ctx.quick else (15, 10000, 5000)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=[
            "variant",
            "median ns",
            "p99 ns",
            "ratio to structlog",
            "ratio spread",
            "change vs the row above",
        ],
        quick=ctx.quick,
    )
    ctx.say("profile: profiling the chain")
    table, profiler = profile_chain(5000 if ctx.quick else 50000)
    section.extra["profile"] = table
    section.extra["profiler"] = profiler

    patches = sorted(PATCHES.glob("*.diff"))
    factories: dict[str, Any] = {
        "structlog": call_cost.structlog_peer,
        "tree": lambda: chain_peer(logpipe, "tree", "logpipe, working tree"),
    }
    labels = {"structlog": "structlog JSON (baseline)", "tree": "logpipe, working tree"}
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-") as tmp:
        revisions = {}
        for i, (rev, what) in enumerate(REVISIONS):
            mod = load_revision(f"logpipe_rev{i}_{os.getpid()}", rev, Path(tmp))
            if mod is None:
                section.notes.append(f"Revision {rev} ({what}) is not in this clone: not measured.")
                continue
            key = f"rev-{rev}"
            labels[key] = f"logpipe at {rev}, {what}"
            revisions[key] = lambda mod=mod, key=key: chain_peer(mod, key, labels[key])
        factories = {"structlog": factories["structlog"], **revisions, "tree": factories["tree"]}
        states = series_states(patches, Path(tmp))
        pending = [p for p in patches if states[p.name] == "applies"]
        for i in range(1, len(pending) + 1):
            key = pending[i - 1].stem
            mod = load_variant(f"logpipe_series{i}_{os.getpid()}", pending[:i], Path(tmp))
            labels[key] = f"+ {pending[i - 1].name}"
            factories[key] = lambda mod=mod, key=key: chain_peer(mod, key, labels[key])
        variants = ", ".join(p.stem for p in pending) or "nothing"
        ctx.say(f"profile: before/after of {variants}")
        _, skipped, results, overhead = call_cost.measure(
            factories, rounds=rounds, calls=calls, warmup=warmup, say=ctx.say
        )
    base = results["structlog"]
    figures = {}
    previous: list[Any] = []
    for key in factories:
        rr = results.get(key)
        if not rr:
            continue
        ratios = [a.median / b.median for a, b in zip(rr, base, strict=True)]
        step = [a.median - p.median for a, p in zip(rr, previous, strict=True)] if previous else []
        fig = {
            "median_ns": median(r.median for r in rr),
            "p99_ns": median(r.p99 for r in rr),
            "ratio": median(ratios),
            "step_ns": median(step) if step else float("nan"),
        }
        if key != "structlog":
            previous = rr
        figures[key] = fig
        section.rows.append(
            {
                "variant": labels[key],
                "key": key,
                "median ns": fmt_num(fig["median_ns"]),
                "p99 ns": fmt_num(fig["p99_ns"]),
                "ratio to structlog": fmt_ratio(fig["ratio"]),
                "ratio spread": spread(ratios) if key != "structlog" else "-",
                "change vs the row above": "-" if not step else f"{fig['step_ns']:+.0f} ns",
            }
        )
    section.extra["figures"] = figures
    section.extra["patch_states"] = states
    section.extra["timer_overhead_ns"] = overhead

    prof_md = "\n".join(
        [f"Own time of the chain under {profiler} (discarding exporter, {5000 if ctx.quick else 50000:,} calls):", ""]
        + ["| function | own time % |", "|---|---|"]
        + [f"| `{r['function']}` | {r['own time %']} |" for r in table]
    )
    section.notes.append(prof_md)
    for p in patches:
        state = states[p.name]
        verdict = {
            "applies": "proposed (not in the tree yet); measured above on a patched copy",
            "applied": "already in the working tree",
            "stale": "no longer applies to the working tree (rebase it)",
        }[state]
        body = p.read_text()
        section.notes.append(f"**`bench/patches/{p.name}`**: {verdict}.\n\n```diff\n{body.rstrip()}\n```")
    section.notes.append(
        f"Before/after: {rounds} interleaved rounds of {calls:,} calls per variant, each the chain to a discarding "
        f"exporter (no client library), timer overhead ({overhead:.0f} ns) subtracted. Earlier revisions are "
        "exported with `git archive` and imported under another name, so they run in the same process, the same "
        "rounds and against the same structlog baseline as the working tree. `change vs the row above` is the "
        "median of per-round differences (negative: faster)."
    )
    if not patches:
        section.notes.append(fixes_note())
    section.seconds = time.perf_counter() - started
    return section
