"""The recorded workload `python -m bench.scaling` replays: task arrivals with durations.

    python -m bench.scaling_workload [--seed 20261130] [--out bench/workloads/mixed.json]

Generated once with a fixed seed and committed, so that every placement strategy, and every
later version of the scheduler, is measured on the very same arrivals. The generator is kept
next to the file so that anyone can check the file is what the seed gives
(tests/unit/test_scaling_workload.py does).

The shape: Poisson arrivals in phases (a steady rate, a burst well above what one leader
places per second on this machine, the steady rate again), each task running for a lognormal
time (median 50 ms, a long tail up to 2 s), as a queue of short jobs with a few long ones.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

WORKLOADS = Path(__file__).resolve().parent / "workloads"
DEFAULT_FILE = WORKLOADS / "mixed.json"
DEFAULT_SEED = 20261130


@dataclass(frozen=True)
class Phase:
    start: float  # seconds from the replay's start
    end: float
    rate: float  # mean arrivals per second (Poisson)


# 5 s steady, a 2 s burst at 600/s, 13 s steady: ~2 000 tasks, ~20 s of arrivals.
DEFAULT_PHASES = (Phase(0.0, 5.0, 60.0), Phase(5.0, 7.0, 600.0), Phase(7.0, 20.0, 60.0))
MEDIAN_DURATION = 0.05
DURATION_SIGMA = 1.0  # of the log: p99 is ~10x the median
MIN_DURATION, MAX_DURATION = 0.001, 2.0


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds from the replay's start, when the task is submitted
    duration: float  # seconds the task runs (its payload is `sleep <duration>`)


@dataclass(frozen=True)
class Workload:
    name: str
    seed: int
    phases: tuple[Phase, ...]
    arrivals: tuple[Arrival, ...]

    def until(self, seconds: float) -> Workload:
        """The arrivals of the first `seconds` only (a quick run)."""
        return Workload(
            self.name,
            self.seed,
            self.phases,
            tuple(a for a in self.arrivals if a.at < seconds),
        )


def generate(
    seed: int = DEFAULT_SEED, phases: tuple[Phase, ...] = DEFAULT_PHASES, name: str = "mixed"
) -> Workload:
    """Arrivals and durations from `seed` alone: the same seed always gives the same workload.

    Times are rounded to the millisecond, as the file stores them, so a generated workload and
    the same one read back from its file compare equal."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    for phase in phases:
        t = phase.start
        while True:
            t += rng.expovariate(phase.rate)
            if t >= phase.end:
                break
            duration = rng.lognormvariate(math.log(MEDIAN_DURATION), DURATION_SIGMA)
            duration = min(MAX_DURATION, max(MIN_DURATION, duration))
            arrivals.append(Arrival(round(t, 3), round(duration, 3)))
    return Workload(name, seed, tuple(phases), tuple(arrivals))


def to_json(workload: Workload) -> str:
    # Arrays of milliseconds, one task a line: small to commit, readable in a diff.
    rows = ",\n".join(
        f"  [{round(a.at * 1000)}, {round(a.duration * 1000)}]" for a in workload.arrivals
    )
    head = [
        ("name", workload.name),
        ("seed", workload.seed),
        ("generator", f"python -m bench.scaling_workload --seed {workload.seed}"),
        ("phases", [[p.start, p.end, p.rate] for p in workload.phases]),
        ("columns", ["submit at (ms from start)", "runs for (ms)"]),
    ]
    fields = "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head)
    return "{\n" + fields + ' "arrivals": [\n' + rows + "\n ]\n}\n"


def load(path: Path = DEFAULT_FILE) -> Workload:
    data = json.loads(path.read_text())
    try:
        phases = tuple(Phase(float(s), float(e), float(r)) for s, e, r in data["phases"])
        arrivals = tuple(Arrival(at / 1000, dur / 1000) for at, dur in data["arrivals"])
        return Workload(str(data["name"]), int(data["seed"]), phases, arrivals)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a workload file: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling_workload", description=__doc__)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--out", type=Path, default=DEFAULT_FILE)
    args = p.parse_args(argv)
    workload = generate(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(workload))
    busy = sum(a.duration for a in workload.arrivals)
    print(f"{args.out}: {len(workload.arrivals)} tasks, {busy:.0f} task-seconds of work")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
