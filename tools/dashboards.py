"""Write tasklab's Grafana dashboards (deploy/grafana/dashboards/*.json) from one description.

Four dashboards: the overview (throughput, success rate, queue depth, latency percentiles,
agents), one agent at a time, the guarantees (leadership, fencing, failovers, dead letters,
firing alerts), and from stage 4 the front door and bus (REST and gRPC rate, errors and
duration; Kafka consumer lag). Each panel is its PromQL and little else; this script adds
what Grafana needs around it (ids, grid positions, the data source), so that the JSON files
stay consistent.

    python tools/dashboards.py          # rewrite the JSON files
    python tools/dashboards.py --check  # exit 1 if a JSON file differs from what this writes

tests/stage5_observability/test_dashboards.py checks the files against Grafana's dashboard
schema and that they are what this script writes; test_alerting.py runs every panel's query
against a live Prometheus and requires data.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deploy" / "grafana" / "dashboards"
# The data source is a dashboard variable, so the same JSON works with whatever Prometheus
# a Grafana has (the provisioned one is deploy/grafana/provisioning/datasources/).
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SCHEMA_VERSION = 39
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    unit: str = "short"
    width: int = 8
    height: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[dict, ...] = field(default_factory=tuple)


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def quantiles(metric: str, by: str = "le", selector: str = "") -> tuple[Query, ...]:
    return tuple(
        q(
            f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{int(p * 100)}" + (" {{outcome}}" if "outcome" in by else ""),
        )
        for p in (0.5, 0.95, 0.99)
    )


OVERVIEW = Dashboard(
    uid="tasklab-overview",
    title="tasklab / Overview",
    description="What the platform does: tasks through it, how many succeed, what waits, how "
    "long, and the agents that run them.",
    rows=(
        Row(
            "Tasks",
            (
                Panel(
                    "Success rate",
                    "Of the tasks that reached SUCCESS or FAILED (retries exhausted), the share "
                    "that succeeded.",
                    (
                        q(
                            f'sum(rate(tasklab_tasks_finished_total{{status="SUCCESS"}}[{RATE}])) '
                            f"/ sum(rate(tasklab_tasks_finished_total"
                            f'{{status=~"SUCCESS|FAILED"}}[{RATE}]))',
                            "success rate",
                        ),
                    ),
                    kind="stat",
                    unit="percentunit",
                    width=6,
                ),
                Panel(
                    "Throughput by final status",
                    "Tasks per second reaching a final status, counted where the final write "
                    "was accepted (agent, manager or RPC provider).",
                    (
                        q(
                            f"sum by (status) (rate(tasklab_tasks_finished_total[{RATE}]))",
                            "{{status}}",
                        ),
                    ),
                    unit="ops",
                    width=9,
                ),
                Panel(
                    "Attempts started and retries",
                    "Attempts the agents started, and failed attempts sent back for a retry.",
                    (
                        q(
                            f"sum by (type) (rate(tasklab_tasks_started_total[{RATE}]))",
                            "started {{type}}",
                        ),
                        q(
                            f"sum by (type) (rate(tasklab_task_retries_total[{RATE}]))",
                            "retried {{type}}",
                        ),
                    ),
                    unit="ops",
                    width=9,
                ),
            ),
        ),
        Row(
            "Queues",
            (
                Panel(
                    "Queue depth",
                    "Tasks waiting in the shared queues (read from Redis by every role that "
                    "serves it: max, not sum).",
                    (q('max by (queue) (tasklab_queue_depth{agent=""})', "{{queue}}"),),
                    width=12,
                ),
                Panel(
                    "Agent inboxes and running attempts",
                    "Per agent: dispatched tasks not yet started (inbox) and attempts running "
                    "(processing).",
                    (
                        q(
                            "max by (agent, queue) "
                            '(tasklab_queue_depth{queue=~"inbox|processing"})',
                            "{{agent}} {{queue}}",
                        ),
                    ),
                    width=12,
                ),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "Schedule-to-start latency",
                    "From a task's creation to the start of its first attempt: the time it "
                    "waited in queues.",
                    quantiles("tasklab_task_schedule_to_start_seconds"),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Run time",
                    "How long attempts ran on the agents.",
                    quantiles("tasklab_task_run_seconds"),
                    unit="s",
                    width=12,
                ),
            ),
        ),
        Row(
            "Agents",
            (
                Panel(
                    "Agents",
                    "Three views of the agents that should agree: registered in ZooKeeper, "
                    "heartbeating in Redis, answering Prometheus.",
                    (
                        q("max(tasklab_agents_live)", "registered (ZooKeeper)"),
                        q("max(tasklab_agents_heartbeating)", "heartbeating (Redis)"),
                        q('sum(up{job="tasklab", role="agent"})', "scraped"),
                    ),
                    kind="stat",
                    width=12,
                ),
                Panel(
                    "Slots",
                    "Attempts the live agents run, against how many they can run at once.",
                    (
                        q("max(tasklab_agents_used_slots)", "used"),
                        q("max(tasklab_agents_capacity_slots)", "capacity"),
                    ),
                    width=12,
                ),
            ),
        ),
    ),
)

AGENT_SELECTOR = '{job="tasklab", instance=~"$agent"}'
AGENT = Dashboard(
    uid="tasklab-agent",
    title="tasklab / Agent",
    description="One agent (or several) at a time: its slots, heartbeat, work and memory.",
    variables=(
        {
            "name": "agent",
            "label": "Agent",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {
                "query": 'label_values(up{job="tasklab", role="agent"}, instance)',
                "refId": "agents",
            },
            "refresh": 2,
            "includeAll": True,
            "allValue": ".+",
            "multi": True,
            "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
        },
    ),
    rows=(
        Row(
            "Health",
            (
                Panel(
                    "Up",
                    "1 while Prometheus can scrape the agent's operator port.",
                    (q('up{job="tasklab", role="agent", instance=~"$agent"}', "{{instance}}"),),
                    kind="stat",
                    width=6,
                ),
                Panel(
                    "Heartbeat age",
                    "Seconds since the agent's last heartbeat went through; the failover "
                    "starts when it passes the heartbeat TTL or the ZooKeeper session ends.",
                    (q(f"tasklab_agent_heartbeat_age_seconds{AGENT_SELECTOR}", "{{instance}}"),),
                    unit="s",
                    width=9,
                ),
                Panel(
                    "Paused",
                    "1 while the agent takes no new work (ZooKeeper SUSPENDED, or not "
                    "registered yet).",
                    (q(f"tasklab_agent_paused{AGENT_SELECTOR}", "{{instance}}"),),
                    width=9,
                ),
            ),
        ),
        Row(
            "Work",
            (
                Panel(
                    "Slots used and capacity",
                    "Attempts the agent runs now, and how many it runs at once.",
                    (
                        q(f"tasklab_agent_slots_used{AGENT_SELECTOR}", "{{instance}} used"),
                        q(f"tasklab_agent_slots{AGENT_SELECTOR}", "{{instance}} capacity"),
                    ),
                    width=12,
                ),
                Panel(
                    "Inbox and running",
                    "Dispatched to the agent and not started (inbox), and running "
                    "(processing), as Redis holds them.",
                    (
                        q(
                            'max by (agent, queue) (tasklab_queue_depth{queue=~"inbox|processing",'
                            ' agent=~"$agent"})',
                            "{{agent}} {{queue}}",
                        ),
                    ),
                    width=12,
                ),
                Panel(
                    "Attempts started",
                    "Attempts per second the agent started, by task type.",
                    (
                        q(
                            f"sum by (instance, type) (rate(tasklab_tasks_started_total"
                            f"{AGENT_SELECTOR}[{RATE}]))",
                            "{{instance}} {{type}}",
                        ),
                    ),
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Run time by outcome",
                    "How long the agent's attempts ran, by how they ended.",
                    quantiles("tasklab_task_run_seconds", "le, outcome", AGENT_SELECTOR),
                    unit="s",
                    width=12,
                ),
            ),
        ),
        Row(
            "Process",
            (
                Panel(
                    "Resident memory",
                    "The agent process's resident memory (its tasks run in their own "
                    "processes and are not included).",
                    (q(f"process_resident_memory_bytes{AGENT_SELECTOR}", "{{instance}}"),),
                    unit="bytes",
                    width=24,
                ),
            ),
        ),
    ),
)

GUARANTEES = Dashboard(
    uid="tasklab-guarantees",
    title="tasklab / Guarantees",
    description="Whether the platform's guarantees hold right now: one leader with the newest "
    "epoch, stale writes refused, dead agents' work given back, dead letters looked at.",
    rows=(
        Row(
            "Leadership and fencing",
            (
                Panel(
                    "Leaders",
                    "Schedulers that say they lead: 1 is right, 0 is NoSchedulerLeader, 2 is "
                    "a deposed leader that has not noticed yet (its writes are fenced).",
                    (q("sum(tasklab_scheduler_is_leader)", "leaders"),),
                    kind="stat",
                    width=6,
                ),
                Panel(
                    "Leader by scheduler",
                    "Which scheduler leads, over time: a change is a failover of the leader.",
                    (q("tasklab_scheduler_is_leader", "{{instance}}"),),
                    width=9,
                ),
                Panel(
                    "Fencing epoch",
                    "The leader's epoch and the newest epoch Redis has seen: writes with an "
                    "older epoch are refused.",
                    (
                        q("max(tasklab_scheduler_epoch)", "leader's epoch"),
                        q("max(tasklab_scheduler_fence_epoch)", "Redis fence"),
                    ),
                    width=9,
                ),
                Panel(
                    "Fenced writes refused",
                    "Writes the Lua scripts refused in each interval, by reason: stale_attempt "
                    "and stale_epoch are the duplicates fencing prevented (DuplicateRun).",
                    (
                        q(
                            f"max by (reason) (increase(tasklab_fenced_writes_rejected_total"
                            f"[{RATE}]))",
                            "{{reason}}",
                        ),
                    ),
                    width=12,
                ),
                Panel(
                    "Transitions applied",
                    "State transitions the Lua scripts accepted per second.",
                    (q(f"max(rate(tasklab_transitions_accepted_total[{RATE}]))", "accepted"),),
                    unit="ops",
                    width=12,
                ),
            ),
        ),
        Row(
            "Failover and dead letters",
            (
                Panel(
                    "Failovers",
                    "Failovers that gave a dead agent's work back, and the tasks they "
                    "re-queued, by who noticed (counted since each process started).",
                    (
                        q("sum by (by) (tasklab_failovers_total)", "failovers by {{by}}"),
                        q(
                            "sum by (by) (tasklab_failover_requeued_tasks_total)",
                            "tasks re-queued by {{by}}",
                        ),
                    ),
                    width=12,
                ),
                Panel(
                    "Dead letters",
                    "Messages set aside as dead letters, by channel and reason (since each "
                    "process started), and the Redis dead-letter list.",
                    (
                        q(
                            "sum by (channel, reason) (tasklab_dead_letters_total)",
                            "{{channel}} {{reason}}",
                        ),
                        q('max(tasklab_queue_depth{queue="dead_letter"})', "dead-letter list"),
                    ),
                    width=12,
                ),
                Panel(
                    "Redis reachable",
                    "1 while every role that reads the cluster state from Redis reaches it.",
                    (q("min(tasklab_redis_up)", "redis"),),
                    kind="stat",
                    width=6,
                ),
                Panel(
                    "Firing alerts",
                    "The alerts of deploy/prometheus/rules firing now (no data: none fires).",
                    (q('sum by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}"),),
                    width=18,
                ),
            ),
        ),
    ),
)

FRONT_DOOR = Dashboard(
    uid="tasklab-front-door",
    title="tasklab / Front door and bus",
    description="From stage 4: the REST API and the gRPC TaskService providers (rate, errors, "
    "duration), what they accepted, and how far Kafka's consumer groups lag behind.",
    rows=(
        Row(
            "REST API",
            (
                Panel(
                    "Requests by route and status",
                    "Requests per second the REST API answered, by route template and status.",
                    (
                        q(
                            f"sum by (route, status) (rate(tasklab_http_requests_total[{RATE}]))",
                            "{{route}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Server errors",
                    "The share of the API's answers that were 5xx (a backing service down "
                    "answers 503); 0 before the first one, whose series does not exist yet.",
                    (
                        q(
                            f'(sum(rate(tasklab_http_requests_total{{status=~"5.."}}[{RATE}])) '
                            f"or vector(0)) / sum(rate(tasklab_http_requests_total[{RATE}]))",
                            "5xx",
                        ),
                    ),
                    kind="stat",
                    unit="percentunit",
                    width=4,
                ),
                Panel(
                    "Request duration p95",
                    "95th percentile of the API's request duration, by route template.",
                    (
                        q(
                            "histogram_quantile(0.95, sum by (le, route) "
                            f"(rate(tasklab_http_request_duration_seconds_bucket[{RATE}])))",
                            "{{route}}",
                        ),
                    ),
                    unit="s",
                    width=8,
                ),
            ),
        ),
        Row(
            "gRPC TaskService",
            (
                Panel(
                    "Calls by method and code",
                    "Calls per second the providers answered, by method and gRPC status code.",
                    (
                        q(
                            "sum by (method, code) "
                            f"(rate(tasklab_grpc_server_requests_total[{RATE}]))",
                            "{{method}} {{code}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Call duration p95",
                    "95th percentile of a call's duration, by method (a Watch lasts as long as "
                    "it watches).",
                    (
                        q(
                            "histogram_quantile(0.95, sum by (le, method) "
                            f"(rate(tasklab_grpc_server_request_duration_seconds_bucket[{RATE}])))",
                            "{{method}}",
                        ),
                    ),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Tasks submitted",
                    "Tasks created by submissions the providers accepted, by type (a repeated "
                    "requestId is not counted).",
                    (
                        q(
                            f"sum by (type) (rate(tasklab_tasks_submitted_total[{RATE}]))",
                            "{{type}}",
                        ),
                    ),
                    unit="ops",
                    width=24,
                ),
            ),
        ),
        Row(
            "Kafka",
            (
                Panel(
                    "Consumer lag by group and topic",
                    "Messages each consumer group has not yet committed, its partitions added "
                    "up (ConsumerLag fires above 1000 for 5 minutes).",
                    (
                        q(
                            "sum by (group, topic) (max by (group, topic, partition) "
                            "(tasklab_kafka_consumer_lag))",
                            "{{group}} {{topic}}",
                        ),
                    ),
                    width=24,
                ),
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, AGENT, GUARANTEES, FRONT_DOOR)


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    options: dict = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    if panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
            }
            for n, query in enumerate(panel.queries)
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict:
    panels: list[dict] = []
    y = 0
    panel_id = 1
    for row in dashboard.rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    others = [d for d in DASHBOARDS if d.uid != dashboard.uid]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["tasklab"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": other.title,
                "type": "link",
                "url": f"/d/{other.uid}",
                "asDropdown": False,
                "icon": "dashboard",
                "includeVars": False,
                "keepTime": True,
                "tags": [],
                "targetBlank": False,
                "tooltip": "",
            }
            for other in others
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
                    "options": [],
                    "refresh": 1,
                },
                *dashboard.variables,
            ]
        },
        "panels": panels,
    }


def rendered() -> dict[Path, str]:
    return {
        OUT / f"{d.uid.removeprefix('tasklab-')}.json": json.dumps(dashboard_json(d), indent=2)
        + "\n"
        for d in DASHBOARDS
    }


def main(argv: list[str]) -> int:
    files = rendered()
    if "--check" in argv:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from tools/dashboards.py's output")
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
