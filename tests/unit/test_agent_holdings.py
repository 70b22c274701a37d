"""The agent's holdings: a reconcile sees every attempt its workers run, and no take or
chained report is in flight while it compares (common/agent/holdings.py)."""

from __future__ import annotations

import threading
import time

from common.agent.holdings import Holdings


def test_a_reconcile_waits_for_the_calls_in_flight_and_sees_what_they_took():
    holdings = Holdings()
    in_call, go_on = threading.Event(), threading.Event()

    def take() -> None:
        with holdings.call():
            in_call.set()
            go_on.wait(5)
            holdings.hold("entry-1")

    worker = threading.Thread(target=take)
    worker.start()
    in_call.wait(5)
    threading.Timer(0.2, go_on.set).start()
    with holdings.alone(5.0) as held:
        # the call ended before the reconcile could compare: what it took counts as held
        assert held == {"entry-1": 1}
    worker.join(5)


def test_no_call_starts_while_a_reconcile_compares():
    holdings = Holdings()
    started = threading.Event()

    def take() -> None:
        with holdings.call():
            started.set()

    with holdings.alone(1.0) as held:
        assert held == {}
        worker = threading.Thread(target=take)
        worker.start()
        assert not started.wait(0.2), "a call started during the reconcile"
    assert started.wait(5), "the call did not start once the reconcile was over"
    worker.join(5)


def test_a_reconcile_gives_up_while_a_call_stays_in_flight_and_lets_calls_go_on():
    holdings = Holdings()
    release = threading.Event()

    def stuck() -> None:
        with holdings.call():
            release.wait(5)

    worker = threading.Thread(target=stuck)
    worker.start()
    time.sleep(0.05)
    with holdings.alone(0.1) as held:
        assert held is None
    release.set()
    worker.join(5)
    with holdings.call():  # not blocked by the abandoned reconcile
        pass


def test_holding_is_counted_per_entry_and_released_once_per_attempt():
    holdings = Holdings()
    holdings.hold("same")
    holdings.hold("same")
    holdings.hold("")  # an untracked attempt has no entry to hold
    holdings.release("same")
    with holdings.alone(1.0) as held:
        assert held == {"same": 1}


def test_a_lost_answer_makes_two_looks_due_the_second_after_a_pause():
    holdings = Holdings(second_look=0.2)
    assert not holdings.due()
    holdings.unanswered()
    assert holdings.due()
    holdings.reconciled()
    assert not holdings.due()
    time.sleep(0.25)
    assert holdings.due()
    holdings.reconciled()
    time.sleep(0.25)
    assert not holdings.due()


def test_two_workers_that_find_a_reconcile_due_at_once_never_compare_side_by_side():
    # Given a lost answer, so that a reconcile is due for every worker of the agent
    holdings = Holdings(second_look=60.0)
    holdings.unanswered()
    first_in, first_go = threading.Event(), threading.Event()
    second: list = []

    def first() -> None:
        with holdings.alone(5.0) as held:
            first_in.set()
            first_go.wait(5)
            assert held == {}
            holdings.reconciled()

    def other() -> None:
        with holdings.alone(5.0) as held:
            second.append(held)

    a = threading.Thread(target=first)
    a.start()
    assert first_in.wait(5)
    # When a second worker asks to reconcile while the first compares
    b = threading.Thread(target=other)
    b.start()
    time.sleep(0.2)
    # Then it waits (were it to compare now, the first one's end would let takes start
    # under it) ...
    assert second == []
    first_go.set()
    a.join(5)
    b.join(5)
    # ... and compares nothing once the first is done: that look was taken
    assert second == [None]
    # and the gate is open again for takes
    with holdings.call():
        pass


def test_a_reconcile_after_another_ended_compares_again_when_a_look_is_still_due():
    holdings = Holdings(second_look=0.0)
    holdings.unanswered()
    with holdings.alone(1.0) as held:
        assert held == {}
    holdings.reconciled()
    # the second look, on a later turn, is a reconcile of its own
    assert holdings.due()
    with holdings.alone(1.0) as held:
        assert held == {}
