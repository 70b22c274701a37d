"""Which handled offsets the manager may store: only what the durability barrier vouches for."""

from common.messaging.durability import PendingOffsets


def test_offsets_wait_out_the_horizon_and_then_the_newest_position_of_each_partition_is_stored():
    # Given messages handled over two commit intervals
    pending = PendingOffsets()
    pending.handled("status", 0, 10)
    pending.handled("status", 0, 11)
    pending.handled("logs", 3, 5)
    pending.cut(1.0)
    pending.handled("status", 0, 12)
    pending.cut(2.0)
    # When the barrier vouches only for what was applied by 1.5 (everysec: 2 s horizon)
    # Then only the first interval's positions may be stored: one past each last handled
    assert pending.ready(1.5) == {("status", 0): 12, ("logs", 3): 6}
    pending.stored(1.5)
    # and the second interval's once its time is covered too
    assert pending.ready(1.5) == {}
    assert pending.ready(2.0) == {("status", 0): 13}
    pending.stored(2.0)
    assert not pending


def test_a_revoked_partitions_offsets_are_dropped_so_its_next_owner_reads_them_again():
    pending = PendingOffsets()
    pending.handled("status", 0, 10)
    pending.handled("status", 1, 20)
    pending.cut(1.0)
    pending.handled("status", 0, 11)
    pending.drop({("status", 0)})
    pending.cut(2.0)
    assert pending.ready(5.0) == {("status", 1): 21}


def test_nothing_is_ready_before_anything_was_handled():
    pending = PendingOffsets()
    pending.cut(1.0)
    assert pending.ready(10.0) == {} and not pending
