"""Medians over repetitions, ratios to Celery from the same run, the table and the plot."""

from __future__ import annotations

import math

from bench.measure import median

# (key in the summary, where it is in a trial, label, format, higher is better)
METRICS: list[tuple[str, tuple[str, str], str, str, bool]] = [
    ("burst_tps", ("burst", "tasks_per_s"), "burst/s", "{:.0f}", True),
    ("drain_tps", ("drain", "tasks_per_s"), "drain/s", "{:.0f}", True),
    ("first_task_s", ("drain", "time_to_first_task_s"), "1st s", "{:.2f}", False),
    ("start_p50_ms", ("steady", "start_p50_ms"), "p50 ms", "{:.2f}", False),
    ("start_p99_ms", ("steady", "start_p99_ms"), "p99 ms", "{:.2f}", False),
    ("e2e_p99_ms", ("steady", "e2e_p99_ms"), "e2e99 ms", "{:.2f}", False),
    ("worker_cpu_ms", ("burst", "worker_cpu_ms_per_task"), "wCPU ms", "{:.2f}", False),
    ("client_cpu_ms", ("burst", "client_cpu_ms_per_task"), "cCPU ms", "{:.3f}", False),
    ("redis_cmds", ("burst", "redis_cmds_per_task"), "cmds", "{:.1f}", False),
    ("round_trips", ("monitor", "round_trips_per_task"), "sent", "{:.1f}", False),
    ("redis_cpu_us", ("burst", "redis_cpu_us_per_task"), "rCPU us", "{:.0f}", False),
    # Kafka's and ZooKeeper's JVMs: on this machine they share the two cores with the roles.
    ("services_cpu_ms", ("burst", "services_cpu_ms_total"), "sCPU ms", "{:.2f}", False),
    ("all_cpu_ms", ("burst", "all_cpu_ms_per_task"), "allCPU ms", "{:.2f}", False),
    ("pss_mb", ("memory", "pss_mb"), "PSS MB", "{:.0f}", False),
]
RATIO_KEYS = ["burst_tps", "drain_tps", "start_p50_ms", "start_p99_ms", "e2e_p99_ms",
              "worker_cpu_ms", "all_cpu_ms", "redis_cmds", "pss_mb"]  # fmt: skip
CELERY = ("celery-stock", "celery-parity")
# Shown with their spread over the repetitions (min-max): on a shared machine a median alone
# hides whether two systems' figures overlap.
SPREAD_KEYS = ["burst_tps", "start_p50_ms", "worker_cpu_ms"]


def _get(trial: dict, path: tuple[str, str]) -> float:
    section = trial.get(path[0]) or {}
    value = section.get(path[1])
    return float(value) if value is not None else float("nan")


def one_line(trial: dict) -> str:
    if trial["system"] == "floor":
        return (
            f"redis-list {trial['redis_list']['tasks_per_s']:.0f}/s, "
            f"sh {trial['spawn_sh']['tasks_per_s']:.0f}/s, "
            f"fork {trial['spawn_fork']['tasks_per_s']:.0f}/s, "
            f"python {trial['spawn_python']['tasks_per_s']:.0f}/s"
        )
    return (
        f"burst {_get(trial, ('burst', 'tasks_per_s')):.0f}/s, "
        f"drain {_get(trial, ('drain', 'tasks_per_s')):.0f}/s, "
        f"p50 {_get(trial, ('steady', 'start_p50_ms')):.2f} ms, "
        f"p99 {_get(trial, ('steady', 'start_p99_ms')):.2f} ms, "
        f"lost {trial['lost']} dup {trial['duplicated']} failed {trial['failed']}"
    )


def summarize(trials: list[dict], workloads: list[str]) -> dict:
    systems: dict[str, dict[str, dict]] = {}
    for trial in trials:
        if trial["system"] == "floor":
            continue
        systems.setdefault(trial["system"], {}).setdefault(trial["workload"], {"_t": []})
        systems[trial["system"]][trial["workload"]]["_t"].append(trial)
    out: dict = {"systems": {}, "ratios": {}, "floors": {}}
    for name, per_wl in systems.items():
        out["systems"][name] = {}
        for wl, bucket in per_wl.items():
            ts = bucket["_t"]
            row = {key: median([_get(t, path) for t in ts]) for key, path, *_ in METRICS}
            row["spread"] = {
                key: _spread([_get(t, path) for t in ts])
                for key, path, *_ in METRICS
                if key in SPREAD_KEYS
            }
            row.update(
                reps=len(ts),
                lost=sum(t["lost"] for t in ts),
                duplicated=sum(t["duplicated"] for t in ts),
                failed=sum(t["failed"] for t in ts),
            )
            mon = next((t["monitor"] for t in ts if t.get("monitor")), None)
            if mon:
                row["by_command_per_task"] = mon["by_command_per_task"]
            out["systems"][name][wl] = row
    for name, per_wl in out["systems"].items():
        if name in CELERY:
            continue
        out["ratios"][name] = {}
        for wl, row in per_wl.items():
            out["ratios"][name][wl] = {}
            for key in RATIO_KEYS:
                out["ratios"][name][wl][key] = {
                    ref: _ratio(row[key], out["systems"].get(ref, {}).get(wl, {}).get(key))
                    for ref in CELERY
                }
    # Before/after: a system run from a baseline checkout ("tasklab-stage3@1da7717") next to
    # the same stage today, in the same run.
    out["versus_baseline"] = {}
    for name, per_wl in out["systems"].items():
        if "@" not in name:
            continue
        current = out["systems"].get(name.split("@", 1)[0], {})
        out["versus_baseline"][name] = {
            wl: {key: _ratio(current[wl][key], row[key]) for key in RATIO_KEYS}
            for wl, row in per_wl.items()
            if wl in current
        }
    floor_trials = [t for t in trials if t["system"] == "floor"]
    for key in ("redis_list", "spawn_sh", "spawn_fork", "spawn_python"):
        vals = [t[key] for t in floor_trials if key in t]
        if vals:
            out["floors"][key] = {
                "per_task_us": median([v["per_task_us"] for v in vals]),
                "tasks_per_s": median([v["tasks_per_s"] for v in vals]),
            }
    return out


def _order(names) -> list[str]:
    """tasklab stages first (stage 1, 2, 3, then baselines), Celery after them."""
    return sorted(names, key=lambda n: (n.startswith("celery"), "@" in n, n))


def _spread(values: list[float]) -> list[float]:
    vals = [v for v in values if not math.isnan(v)]
    return [min(vals), max(vals)] if vals else [float("nan"), float("nan")]


def _ratio(a: float, b: float | None) -> float:
    if b is None or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def _fmt(fmt: str, v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def table(summary: dict, meta: dict) -> str:
    lines: list[str] = []
    header = ["system"] + [m[2] for m in METRICS] + ["lost/dup"]
    for wl in _workloads(summary):
        lines.append(f"== {wl}")
        rows = [header]
        for name in _order(summary["systems"]):
            row = summary["systems"][name].get(wl)
            if not row:
                continue
            cells = [name] + [_fmt(fmt, row[key]) for key, _p, _l, fmt, _h in METRICS]
            cells.append(f"{row['lost']}/{row['duplicated']}")
            rows.append(cells)
        lines.extend(_grid(rows))
        lines.append("")
    if summary["ratios"]:
        lines.append("== ratios: tasklab / Celery stock | tasklab / Celery parity (same run)")
        labels = {m[0]: m[2] for m in METRICS}
        rows = [["system", "workload"] + [labels[k] for k in RATIO_KEYS]]
        for name in _order(summary["ratios"]):
            for wl, ratios in sorted(summary["ratios"][name].items()):
                rows.append(
                    [name, wl]
                    + [
                        f"{_fmt('{:.2f}', r['celery-stock'])}|{_fmt('{:.2f}', r['celery-parity'])}"
                        for r in (ratios[k] for k in RATIO_KEYS)
                    ]
                )
        lines.extend(_grid(rows))
        lines.append("(throughput: >1 = tasklab faster; latency, CPU, commands, memory: <1 = less)")
        lines.append("")
    lines.extend(_spread_rows(summary, markdown=False))
    lines.extend(_baseline_rows(summary, markdown=False))
    if summary["floors"]:
        lines.append("== floors (median)")
        for key, v in summary["floors"].items():
            lines.append(f"  {key:<13} {v['per_task_us']:8.1f} us/task  {v['tasks_per_s']:8.0f}/s")
    for name, reason in meta.get("missing", {}).items():
        lines.append(f"missing: {name}: {reason}")
    for failure in meta.get("failed_trials", []):
        lines.append(f"failed trial: {failure}")
    return "\n".join(lines)


def _spread_rows(summary: dict, markdown: bool) -> list[str]:
    """Each system's min-max over its repetitions, for the figures the ratios rest on."""
    labels = {m[0]: (m[2], m[3]) for m in METRICS}
    head = ["system", "workload", "reps"] + [labels[k][0] + " min-max" for k in SPREAD_KEYS]
    rows = [head]
    for name in _order(summary["systems"]):
        for wl, row in sorted(summary["systems"][name].items()):
            spread = row.get("spread")
            if not spread:
                continue
            cells = []
            for key in SPREAD_KEYS:
                lo, hi = spread[key]
                fmt = labels[key][1]
                cells.append(f"{_fmt(fmt, lo)}-{_fmt(fmt, hi)}")
            rows.append([name, wl, str(row["reps"])] + cells)
    if len(rows) == 1:
        return []
    return _titled(
        rows,
        markdown,
        "**Spread over the repetitions** (min-max)",
        "spread over the repetitions (min-max)",
    )


def _baseline_rows(summary: dict, markdown: bool) -> list[str]:
    """After / before: today's stage next to itself as of the baseline commit."""
    found = summary.get("versus_baseline") or {}
    if not found:
        return []
    labels = {m[0]: m[2] for m in METRICS}
    head = ["after / before", "workload"] + [labels[k] for k in RATIO_KEYS]
    rows = [head]
    for name in sorted(found):
        for wl, ratios in sorted(found[name].items()):
            rows.append([name, wl] + [_fmt("{:.2f}", ratios[k]) for k in RATIO_KEYS])
    return _titled(
        rows,
        markdown,
        "**After / before, same run** (today's stage over the baseline's)",
        "after / before (today's stage over the baseline's, same run)",
    )


def _titled(rows: list[list[str]], markdown: bool, md_title: str, text_title: str) -> list[str]:
    """A table whose first row is its head, with its title: a markdown table, or the text grid
    the run prints."""
    if markdown:
        return [
            md_title + "\n",
            *("| " + " | ".join(r) + " |" for r in rows[:1]),
            "|" + "---|" * len(rows[0]),
            *("| " + " | ".join(r) + " |" for r in rows[1:]),
            "",
        ]
    return [f"== {text_title}", *_grid(rows), ""]


def _workloads(summary: dict) -> list[str]:
    return sorted({wl for per_wl in summary["systems"].values() for wl in per_wl})


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = zip(r, widths, strict=True)
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))
    return out


def plot(trials: list[dict], workloads: list[str], path) -> None:
    """ECDF of submit->start latency per system, one panel per workload, log time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = [w for w in workloads if any(t.get("workload") == w for t in trials)]
    if not wls:
        return
    fig, axes = plt.subplots(1, len(wls), figsize=(5 * len(wls), 4), sharey=True, squeeze=False)
    for ax, wl in zip(axes[0], wls, strict=True):
        per_system: dict[str, list[float]] = {}
        for t in trials:
            if t.get("workload") == wl and t.get("steady"):
                per_system.setdefault(t["system"], []).extend(t["steady"]["start_ms"])
        for name in sorted(per_system):
            vals = sorted(v for v in per_system[name] if v > 0)
            if not vals:
                continue
            ys = [(i + 1) / len(vals) for i in range(len(vals))]
            ax.step(vals, ys, where="post", label=f"{name} (n={len(vals)})")
        ax.set_xscale("log")
        ax.set_title(f"{wl}: submit -> start")
        ax.set_xlabel("latency (ms, log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("fraction of tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(summary: dict, meta: dict) -> str:
    """The tables of docs/performance.md, from a results JSON."""
    out: list[str] = []
    labels = {m[0]: m[2] for m in METRICS}
    for wl in _workloads(summary):
        out.append(f"**{wl}**\n")
        head = ["system"] + [m[2] for m in METRICS] + ["lost/dup"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for name in _order(summary["systems"]):
            row = summary["systems"][name].get(wl)
            if row:
                cells = [_fmt(fmt, row[key]) for key, _p, _l, fmt, _h in METRICS]
                out.append(
                    f"| {name} | " + " | ".join(cells) + f" | {row['lost']}/{row['duplicated']} |"
                )
        out.append("")
    if summary["ratios"]:
        out.append("**Ratios to Celery from the same run** (stock / parity)\n")
        head = ["system", "workload"] + [labels[k] for k in RATIO_KEYS]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for name in _order(summary["ratios"]):
            for wl, ratios in sorted(summary["ratios"][name].items()):
                cells = [
                    f"{_fmt('{:.2f}', ratios[k]['celery-stock'])} / "
                    f"{_fmt('{:.2f}', ratios[k]['celery-parity'])}"
                    for k in RATIO_KEYS
                ]
                out.append(f"| {name} | {wl} | " + " | ".join(cells) + " |")
        out.append("")
    out.extend(_spread_rows(summary, markdown=True))
    out.extend(_baseline_rows(summary, markdown=True))
    if summary["floors"]:
        out.append("| floor | µs per task | tasks/s |")
        out.append("|---|---|---|")
        for key, v in summary["floors"].items():
            out.append(f"| {key} | {v['per_task_us']:.0f} | {v['tasks_per_s']:.0f} |")
        out.append("")
    for name, reason in meta.get("missing", {}).items():
        out.append(f"- missing: {name}: {reason}")
    for failure in meta.get("failed_trials", []):
        out.append(f"- failed trial: {failure}")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys

    doc = json.loads(open(sys.argv[1]).read())  # noqa: SIM115 - a one-shot CLI read
    print(
        markdown(doc["summary"], doc["meta"])
        if "--md" in sys.argv
        else table(doc["summary"], doc["meta"])
    )
