"""The front-door bench's arithmetic: medians over repetitions, ratios to the direct client,
the issue's targets, the open-loop schedule, and the table. Pure: no service, no clock."""

from __future__ import annotations

import math

from bench.measure import median, percentile
from bench.report import _fmt, _grid, _ratio

PATHS = ("direct", "grpc", "rest")
DIRECT = "direct"
LABELS = {
    "direct": "direct (TaskClient -> Redis)",
    "grpc": "gRPC (proxy -> provider)",
    "rest": "REST (API -> proxy -> provider)",
}

# (key in a path's summary, where it is in a trial, label, format)
METRICS: list[tuple[str, tuple[str, str], str, str]] = [
    ("submit_per_s", ("throughput", "per_s"), "submits/s", "{:.0f}"),
    ("p50_ms", ("throughput", "p50_ms"), "p50 ms", "{:.2f}"),
    ("p99_ms", ("throughput", "p99_ms"), "p99 ms", "{:.2f}"),
    ("rate_p50_ms", ("fixed_rate", "p50_ms"), "@rate p50", "{:.2f}"),
    ("rate_p99_ms", ("fixed_rate", "p99_ms"), "@rate p99", "{:.2f}"),
    ("rate_max_ms", ("fixed_rate", "max_ms"), "@rate max", "{:.2f}"),
    # CPU per submit during the throughput phase: on a machine short of cores, throughput is
    # CPU-bound, and these say where a path spends what the direct client does not.
    ("client_cpu_ms", ("cpu", "client_ms"), "cCPU ms", "{:.3f}"),
    ("server_cpu_ms", ("cpu", "server_ms"), "sCPU ms", "{:.3f}"),
    ("redis_cpu_ms", ("cpu", "redis_ms"), "rCPU ms", "{:.3f}"),
    ("total_cpu_ms", ("cpu", "total_ms"), "CPU ms", "{:.3f}"),
]

# The targets of the issue ("Measured"): a front door may cost something, not everything.
TARGETS = {
    "grpc": {"throughput_ratio": 1 / 2},
    "rest": {"throughput_ratio": 1 / 3},
}
RATE_P99_TARGET_MS = 10.0


def latency_figures(latencies_s: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds of call latencies given in seconds."""
    ms = [v * 1e3 for v in latencies_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


def cpu_per_submit(n: int, client_s: float, server_s: float, redis_s: float) -> dict:
    """CPU milliseconds per submit: the client process, the server side (providers, API),
    Redis, and their sum."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    out = {"client_ms": client_s, "server_ms": server_s, "redis_ms": redis_s}
    out = {k: v / n * 1e3 for k, v in out.items()}
    out["total_ms"] = sum(out.values())
    return out


def schedule(rate: float, seconds: float) -> list[float]:
    """When each call of a fixed-rate run is due, in seconds from the start (open loop)."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, got {rate} and {seconds}")
    return [i / rate for i in range(int(round(rate * seconds)))]


def _get(trial: dict, path: tuple[str, str]) -> float:
    value = (trial.get(path[0]) or {}).get(path[1])
    return float(value) if value is not None else float("nan")


def summarize(trials: list[dict]) -> dict:
    """Per path: the median of each metric over its repetitions, errors summed; ratios of
    throughput and latency to the direct client; and each target met or not."""
    by_path: dict[str, list[dict]] = {}
    for trial in trials:
        by_path.setdefault(trial["path"], []).append(trial)
    paths: dict[str, dict] = {}
    for name in [p for p in PATHS if p in by_path] + sorted(set(by_path) - set(PATHS)):
        ts = by_path[name]
        row = {key: median([_get(t, where) for t in ts]) for key, where, _l, _f in METRICS}
        row["reps"] = len(ts)
        row["errors"] = sum(t.get("errors", 0) for t in ts)
        paths[name] = row
    direct = paths.get(DIRECT, {})
    ratios = {
        name: {
            "submit_per_s": _ratio(row["submit_per_s"], direct.get("submit_per_s")),
            "p50_ms": _ratio(row["p50_ms"], direct.get("p50_ms")),
            "p99_ms": _ratio(row["p99_ms"], direct.get("p99_ms")),
            "rate_p99_ms": _ratio(row["rate_p99_ms"], direct.get("rate_p99_ms")),
        }
        for name, row in paths.items()
        if name != DIRECT
    }
    return {"paths": paths, "ratios": ratios, "targets": targets(paths, ratios)}


def targets(paths: dict, ratios: dict) -> dict[str, dict[str, bool | None]]:
    """Each target of each path: True met, False missed, None not measured (NaN)."""
    out: dict[str, dict[str, bool | None]] = {}
    for name, row in paths.items():
        checks: dict[str, bool | None] = {}
        wanted = TARGETS.get(name, {}).get("throughput_ratio")
        if wanted is not None:
            got = ratios.get(name, {}).get("submit_per_s", float("nan"))
            checks["throughput_ratio"] = None if math.isnan(got) else got >= wanted
        p99 = row["rate_p99_ms"]
        checks["rate_p99"] = None if math.isnan(p99) else p99 < RATE_P99_TARGET_MS
        out[name] = checks
    return out


def one_line(trial: dict) -> str:
    t, r = trial.get("throughput") or {}, trial.get("fixed_rate") or {}
    return (
        f"{_fmt('{:.0f}', t.get('per_s', float('nan')))} submits/s, "
        f"p50 {_fmt('{:.2f}', t.get('p50_ms', float('nan')))} ms, "
        f"p99 {_fmt('{:.2f}', t.get('p99_ms', float('nan')))} ms; "
        f"at {_fmt('{:.0f}', r.get('rate', float('nan')))}/s "
        f"p99 {_fmt('{:.2f}', r.get('p99_ms', float('nan')))} ms; errors {trial.get('errors', 0)}"
    )


def _verdict(value: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[value]


def table(summary: dict, meta: dict) -> str:
    paths = summary["paths"]
    lines = [
        f"== submit through the front door ({meta.get('threads')} client threads; "
        f"fixed rate {meta.get('rate'):.0f}/s for {meta.get('seconds'):.0f}s; "
        f"medians of {meta.get('reps')} rep(s))"
    ]
    rows = [["path"] + [m[2] for m in METRICS] + ["errors"]]
    for name, row in paths.items():
        cells = [LABELS.get(name, name)] + [_fmt(f, row[k]) for k, _w, _l, f in METRICS]
        rows.append(cells + [str(row["errors"])])
    lines.extend(_grid(rows))
    if summary["ratios"]:
        lines.append("")
        lines.append("== ratios to the direct client (same run)")
        rows = [["path", "submits/s", "p50 ms", "p99 ms", "@rate p99"]]
        for name, r in summary["ratios"].items():
            rows.append(
                [LABELS.get(name, name)]
                + [
                    _fmt("{:.2f}", r[k])
                    for k in ("submit_per_s", "p50_ms", "p99_ms", "rate_p99_ms")
                ]
            )
        lines.extend(_grid(rows))
    lines.append("")
    lines.append(
        f"== targets: gRPC >= 1/2 and REST >= 1/3 of the direct client's submits/s; "
        f"p99 < {RATE_P99_TARGET_MS:.0f} ms at {meta.get('rate'):.0f}/s"
    )
    rows = [["path", "throughput", "p99 at rate"]]
    for name, checks in summary["targets"].items():
        rows.append(
            [
                LABELS.get(name, name),
                _verdict(checks.get("throughput_ratio")) if name in TARGETS else "-",
                _verdict(checks.get("rate_p99")),
            ]
        )
    lines.extend(_grid(rows))
    for name, reason in (meta.get("skipped") or {}).items():
        lines.append(f"-- {LABELS.get(name, name)}: skipped ({reason})")
    return "\n".join(lines)
