"""A stage declares its services and process topology in its own StageSpec; the dev stack and
the demo read them from there.

The fake stage 9 below is registered the way a real stage is, by an entry point in an installed
distribution's metadata (here a dist-info folder put on sys.path), so these tests prove that a
new stage needs its bootstrap and its entry-point line, and no edit to any list in `common`.
"""

import sys

import pytest

from common.demo import role_processes
from common.devstack import DevStack, base, services_for_stage
from common.devstack import stack as devstack
from common.stages import StageSpec, installed_stages, load_stage

FAKE_STAGE = '''
import sys

from common.devstack.base import NativeService
from common.stages import StageSpec


def run_role(settings):
    raise AssertionError("the tests never run a role of the fake stage")


class SleepService(NativeService):
    """A stand-in server: a real child process that only sleeps, ready at once."""

    name = "sleeper"

    def check_available(self):
        pass

    def command(self, workdir, port):
        return [sys.executable, "-c", "import time; time.sleep(120)"]

    def env_for(self, host, port):
        return {"TASKLAB_SLEEPER_URL": f"sleep://{host}:{port}"}

    def is_ready(self, host, port):
        return True


STAGE = StageSpec(
    number=9,
    title="a stage the tests make up",
    roles={"relay": run_role, "worker": run_role, "unused": run_role},
    services=SERVICES,
    topology=(("relay", 1), ("worker", 2)),
)
'''


@pytest.fixture
def install_stage(tmp_path, monkeypatch):
    """Install stage 9 as a distribution would: a module plus an entry point in its metadata."""

    def install(services: tuple[str, ...]) -> StageSpec:
        site = tmp_path / "site"
        site.mkdir()
        source = FAKE_STAGE.replace("SERVICES", repr(services))
        (site / "tasklab_fake_stage9.py").write_text(source)
        dist = site / "tasklab_fake_stage9-0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: tasklab-fake-stage9\nVersion: 0\n"
        )
        (dist / "entry_points.txt").write_text("[tasklab.stages]\n9 = tasklab_fake_stage9:STAGE\n")
        monkeypatch.syspath_prepend(str(site))
        return load_stage(9)

    yield install
    sys.modules.pop("tasklab_fake_stage9", None)


@pytest.fixture
def fake_stage(install_stage) -> StageSpec:
    return install_stage(("redis", "zookeeper"))


def test_a_stage_registered_only_by_its_entry_point_is_installed_and_loads(fake_stage):
    assert 9 in installed_stages()
    assert fake_stage.number == 9 and fake_stage.title == "a stage the tests make up"


def test_the_dev_stack_needs_the_services_a_new_stage_declares(fake_stage):
    assert services_for_stage(9) == ("redis", "zookeeper")


def test_the_demo_runs_the_topology_a_new_stage_declares(fake_stage, tmp_path):
    procs = role_processes(fake_stage, {"TASKLAB_REDIS_URL": "redis://x"}, tmp_path)

    assert [(p.role, p.name, p.stage) for p in procs] == [
        ("relay", "relay-1", 9),
        ("worker", "worker-1", 9),
        ("worker", "worker-2", 9),
    ]
    assert all(p.env["TASKLAB_REDIS_URL"] == "redis://x" for p in procs)
    assert [p.env["TASKLAB_AGENT_ID"] for p in procs] == ["relay-1", "worker-1", "worker-2"]


def test_dev_up_starts_exactly_what_a_new_stage_declares_and_dev_down_stops_it(
    install_stage, tmp_path, monkeypatch
):
    # Given a stage whose one backing service is a kind of server the dev stack learns about
    # the way it knows Redis (one SERVICE_CLASSES entry per kind of server, not per stage)
    install_stage(("sleeper",))
    monkeypatch.setitem(devstack.SERVICE_CLASSES, "sleeper", "tasklab_fake_stage9:SleepService")
    stack = DevStack(tmp_path / "devstack")
    try:
        # When the dev stack is brought up for it
        running = stack.up(9)
        # Then that service, and only it, runs, and the state file remembers it
        assert [s.name for s in running] == ["sleeper"]
        assert running[0].alive()
        assert DevStack.env_lines(running)[0].startswith("TASKLAB_SLEEPER_URL=sleep://")
        assert [s.pid for s in stack.load()] == [running[0].pid]
    finally:
        stopped = stack.down()
    # And `down` stops it by the PID it recorded
    assert [s.pid for s in stopped] == [running[0].pid]
    assert not base.pid_alive(running[0].pid)


def test_a_stage_needing_a_service_the_dev_stack_cannot_start_is_a_one_line_error(
    install_stage,
):
    install_stage(("redis", "etcd"))
    with pytest.raises(ValueError, match="stage 9 needs etcd, which the dev stack cannot"):
        services_for_stage(9)


def test_a_stage_that_is_not_installed_is_a_one_line_error():
    with pytest.raises(ValueError, match="stage 42 is not installed"):
        services_for_stage(42)


def test_every_installed_stage_declares_services_the_dev_stack_knows_and_a_topology():
    for number in installed_stages():
        spec = load_stage(number)
        assert spec.number == number
        assert services_for_stage(number)[0] == "redis"  # the task store, in every stage
        assert spec.processes(), f"stage {number} runs no processes"


def run_role(settings):
    raise AssertionError("never run")


def test_a_topology_naming_a_role_the_stage_lacks_is_rejected_when_declared():
    with pytest.raises(ValueError, match="names role 'sheduler', which it does not define"):
        StageSpec(
            number=7,
            title="typo",
            roles={"scheduler": run_role},
            services=("redis",),
            topology=(("sheduler", 1),),
        )


def test_a_service_listed_twice_is_rejected_when_declared():
    with pytest.raises(ValueError, match="lists a service twice"):
        StageSpec(number=7, title="t", roles={}, services=("redis", "redis"), topology=())


def test_the_benchmark_can_scale_one_role_of_the_declared_topology(fake_stage):
    assert fake_stage.processes(scale={"worker": 3}) == [
        ("relay", "relay-1"),
        ("worker", "worker-1"),
        ("worker", "worker-2"),
        ("worker", "worker-3"),
    ]
