"""Which dead letters on the Kafka dead-letter topic nobody has looked at yet (stage 3 on).

"Looked at" is an offset: the consumer group `tasklab-dead-letter-review` never reads the topic
as a member; `tasklab dead-letters-seen` commits its offsets at the end of each partition, and
everything past its committed offset is new. Kafka keeps the mark for us, per partition, with
the same durability as the messages, and the count is end offset minus mark: no message is read
to count. To age the oldest new one, the checker reads one message per partition that has any.
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from common.messaging.clients import Bus
from common.messaging.topics import DEAD_LETTER

REVIEW_GROUP = "tasklab-dead-letter-review"
TIMEOUT = 5.0


class KafkaDeadLetterReview:
    def __init__(self, bus: Bus) -> None:
        self.topic = bus.topic(DEAD_LETTER)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bus.bootstrap,
                "group.id": bus.group(REVIEW_GROUP),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 2,
            }
        )

    def _partitions(self) -> list[TopicPartition]:
        metadata = self.consumer.list_topics(self.topic, timeout=TIMEOUT)
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None:
            return []  # not created yet: nothing dead-lettered
        return [TopicPartition(self.topic, p) for p in sorted(info.partitions)]

    def _ranges(self) -> list[tuple[int, int, int]]:
        """(partition, first offset not looked at, end offset) of every partition."""
        parts = self._partitions()
        if not parts:
            return []
        out = []
        for tp in self.consumer.committed(parts, timeout=TIMEOUT):
            low, high = self.consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
            # No commit yet (offset < 0): everything still held is new.
            out.append((tp.partition, max(tp.offset, low), high))
        return out

    def unseen(self) -> tuple[int, float | None]:
        """(dead letters past the looked-at mark, the broker time of the oldest of them)."""
        count, oldest = 0, None
        for partition, start, end in self._ranges():
            if end <= start:
                continue
            count += end - start
            at = self._timestamp(partition, start)
            if at is not None and (oldest is None or at < oldest):
                oldest = at
        return count, oldest

    def _timestamp(self, partition: int, offset: int) -> float | None:
        self.consumer.assign([TopicPartition(self.topic, partition, offset)])
        try:
            msg = self.consumer.poll(TIMEOUT)
            if msg is None or msg.error() is not None:
                return None
            _, millis = msg.timestamp()
            return millis / 1000 if millis > 0 else None
        finally:
            self.consumer.unassign()

    def mark_seen(self) -> int:
        """Commit the end of every partition as looked at; how many were new."""
        ranges = self._ranges()
        new = sum(max(0, end - start) for _, start, end in ranges)
        offsets = [TopicPartition(self.topic, p, end) for p, _, end in ranges if end > 0]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        return new

    def close(self) -> None:
        self.consumer.close()


__all__ = ["KafkaDeadLetterReview", "KafkaException", "REVIEW_GROUP"]
