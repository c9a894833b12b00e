"""Reload latency: from writing the config file to the new rules serving requests.

Starts the whole service in-process (all actors, HTTP on 127.0.0.1:0) on a copy of the
bundled config, then repeatedly rewrites the file in place and waits for the reload it
triggers. Two figures per run:

- write -> serving: file write until the router serves the new snapshot (watchfiles
  detection + settle time + read/parse/validate/compile in a worker thread + swap);
- reload work: the service's own measurement (read, parse, validate, compile, swap).

Writes are spaced past ``debounce_ms`` so the rate limiter never adds to the figure.

    .venv/bin/python bench/reload.py [--iterations 40] [--rules 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rulesets import MODELS, config_text  # noqa: E402

import app  # noqa: E402
from actors.storage.model_repo import list_repository  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(repo: Path, rules: int, iterations: int) -> tuple[list[float], list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    path = folder / "rules.yml"
    path.write_text(config_text(repo, rules, 0))
    end_to_end: list[float] = []
    work: list[float] = []
    try:
        options = app.Options(config=path, port=0)
        async with trio.open_nursery() as nursery:
            running: app.Running = await nursery.start(app.serve, options)
            service = running.service
            for i in range(1, iterations + 1):
                await trio.sleep(0.15)  # pacing past debounce_ms (benchmark, not synchronisation)
                seen = service.watcher.attempts
                started = time.perf_counter()
                path.write_text(config_text(repo, rules, i))
                event = await service.watcher.wait_for_attempt(seen)
                end_to_end.append((time.perf_counter() - started) * 1000)
                if not event.success:
                    raise SystemExit(f"reload failed: {event.error}")
                work.append(event.latency_ms)
            service.stop.set()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return end_to_end, work


def report(label: str, values: list[float]) -> None:
    print(f"  {label:<24} p50 {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms"
          f"   max {max(values):7.2f} ms   (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rules", type=int, default=200, help="size of the large synthetic rule set")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    if not set(MODELS) <= set(list_repository(args.models)):
        print("demo models missing: run `make models` first", file=sys.stderr)
        return 1
    print(f"reload latency, {args.iterations} reloads per config "
          f"(command: .venv/bin/python bench/reload.py --iterations {args.iterations} --rules {args.rules})")
    for rules in (0, args.rules):
        name = "1-rule config" if rules == 0 else f"{rules}-rule config"
        end_to_end, work = trio.run(measure, args.models.resolve(), rules, args.iterations)
        print(name)
        report("write -> serving", end_to_end)
        report("reload work (service)", work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
