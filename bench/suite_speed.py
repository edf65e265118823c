"""How much faster `make test` runs the tests of an earlier commit than that commit ran them itself.

Not part of `make bench` (it takes 15 to 25 minutes a pair). It clones the baseline commit beside this
checkout, installs it with its own `make install-test`, and finds each of the baseline's test ids in today's
suite (tests moved to mirror the packages keep their names; an id found under no name is listed as gone).
Then it runs `make test` in the baseline and here, alternately, each restricted to that same set of tests
by a small pytest plugin, and prints wall times and their ratio (today / baseline) for every pair: both
runs of a pair see the same machine, which is shared and noisy.

Both suites use the machine's PostgreSQL and Redis (``--postgres``, ``--redis``), as `.ci/run` does.

    .venv/bin/python bench/suite_speed.py [--baseline 056dc03] [--pairs 2] [--workdir /tmp/suite-speed]
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = '''
import os

def pytest_collection_modifyitems(config, items):
    keep = set(open(os.environ["SUITE_SPEED_IDS"]).read().splitlines())
    selected = [item for item in items if item.nodeid in keep]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in keep])
    items[:] = selected
'''


def collect(checkout: Path, env: dict[str, str]) -> list[str]:
    result = subprocess.run([str(checkout / ".venv/bin/python"), "-m", "pytest", "--collect-only", "-q",
                             "-p", "no:cacheprovider"], cwd=checkout, env=env, capture_output=True, text=True,
                            check=False)
    return [line.strip() for line in result.stdout.splitlines() if "::" in line]


def same_tests(baseline: list[str], today: list[str]) -> tuple[dict[str, str], list[str]]:
    """Baseline id -> today's id: the same id, else the one test of that name (or of that name in a file of
    the same name); ids with no such match are returned as gone."""
    present, by_name = set(today), collections.defaultdict(list)
    for nodeid in today:
        by_name[nodeid.split("::", 1)[1]].append(nodeid)
    mapped, gone = {}, []
    for nodeid in baseline:
        if nodeid in present:
            mapped[nodeid] = nodeid
            continue
        candidates = by_name.get(nodeid.split("::", 1)[1], [])
        if len(candidates) > 1:
            filename = Path(nodeid.split("::")[0]).name
            candidates = [c for c in candidates if Path(c.split("::")[0]).name == filename]
        if len(candidates) == 1:
            mapped[nodeid] = candidates[0]
        else:
            gone.append(nodeid)
    return mapped, gone


def timed_make_test(checkout: Path, ids: Path, env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        subprocess.run(["make", "test", "PYTEST_ARGS=-p suite_speed_plugin -q"], cwd=checkout, stdout=out,
                       stderr=subprocess.STDOUT, check=True, env={**env, "SUITE_SPEED_IDS": str(ids)})
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="056dc03", help="the commit to compare with (issue 13's)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/suite-speed"))
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    baseline = args.workdir / "baseline"
    if not baseline.exists():
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(baseline)], check=True)
        subprocess.run(["git", "checkout", "--quiet", args.baseline], cwd=baseline, check=True)
        subprocess.run(["make", "install-test", "oidc-provider", "browser"], cwd=baseline, check=True,
                       stdout=subprocess.DEVNULL)
    (args.workdir / "suite_speed_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PORTAL_TEST_POSTGRES_URL": args.postgres, "PORTAL_TEST_REDIS_URL": args.redis,
           "PYTHONPATH": str(args.workdir)}

    mapped, gone = same_tests(collect(baseline, env), collect(ROOT, env))
    (args.workdir / "baseline-ids.txt").write_text("\n".join(mapped) + "\n")
    (args.workdir / "today-ids.txt").write_text("\n".join(mapped.values()) + "\n")
    print(f"{len(mapped)} baseline tests found today ({sum(k != v for k, v in mapped.items())} under a new path); "
          f"{len(gone)} not found by name:")
    for nodeid in gone:
        print(f"  {nodeid}")

    ratios = []
    for pair in range(1, args.pairs + 1):
        before = timed_make_test(baseline, args.workdir / "baseline-ids.txt", env, args.workdir / f"baseline-{pair}.log")
        after = timed_make_test(ROOT, args.workdir / "today-ids.txt", env, args.workdir / f"today-{pair}.log")
        ratios.append(after / before)
        print(f"pair {pair}: baseline {before:.0f} s, today {after:.0f} s, ratio {after / before:.2f}", flush=True)
    print(f"median ratio {statistics.median(ratios):.2f} over {len(ratios)} pairs (today / baseline; lower is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
