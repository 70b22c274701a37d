"""`tasklab dev up` gives every process of a stage its own operator port, once."""

from __future__ import annotations

from common.demo import role_processes
from common.devstack import DevStack
from common.stages import load_stage


def test_the_dev_stack_chooses_one_operator_port_per_process_and_keeps_it(tmp_path):
    stack = DevStack(tmp_path / "devstack")
    chosen = stack.metrics_addresses(2)
    assert set(chosen) == {name for _, name in load_stage(2).processes()}
    assert chosen["scheduler-1"][0] == "scheduler" and chosen["agent-3"][0] == "agent"
    addresses = [address for _, address in chosen.values()]
    assert len(set(addresses)) == len(addresses), "two processes would share a port"
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert DevStack(tmp_path / "devstack").metrics_addresses(2) == chosen, "the same every time"
    # The API's address, kept in the same state file, survives the metrics ports' saving.
    api = stack.role_env(4)
    assert DevStack(tmp_path / "devstack").metrics_addresses(1)["agent-1"] == chosen["agent-1"]
    assert DevStack(tmp_path / "devstack").role_env(4) == api


def test_the_demo_starts_each_role_with_its_own_operator_port(tmp_path):
    spec = load_stage(2)
    metrics = DevStack(tmp_path / "devstack").metrics_addresses(2)
    procs = role_processes(spec, {"TASKLAB_REDIS_URL": "redis://x"}, tmp_path, metrics)
    assert [p.env["TASKLAB_METRICS_ADDRESS"] for p in procs] == [metrics[p.name][1] for p in procs]
