"""The dead-letter topic is created with its own retention, so it cannot grow forever."""

from confluent_kafka.admin import AdminClient, ConfigResource

from common.messaging.topics import DEAD_LETTER, topic_name


def test_the_dead_letter_topic_keeps_a_week_and_at_most_256_mib_per_partition(bus):
    # Given the topics the platform created (the `bus` fixture ran ensure_topics)
    admin = AdminClient({"bootstrap.servers": bus.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name(DEAD_LETTER, bus.namespace))
    # When the broker is asked for the dead-letter topic's configuration
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    # Then its retention is the topic's own setting, not whatever the broker defaults to
    assert config["retention.ms"].value == str(7 * 86400 * 1000)
    assert config["retention.bytes"].value == str(256 * 1024 * 1024)
    assert not config["retention.ms"].is_default
