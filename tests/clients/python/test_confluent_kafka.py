"""confluent-kafka (librdkafka) against the broker: produce/consume, admin, configs, errors.

librdkafka requires a group.id for a Consumer; the tests set one but only use
assign() with explicit offsets and never commit, so no group API is needed.
"""

import time

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, OFFSET_BEGINNING, Producer,
                             TopicCollection, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, OffsetSpec, ResourceType)

N = 20


def eventually(get, ok, timeout=10):
    """Polls get() until ok(value) or timeout; returns the last value (metadata is eventually consistent)."""
    deadline = time.monotonic() + timeout
    value = get()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = get()
    return value


@pytest.fixture(scope="module")
def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "compat-confluent"})


def create(admin, name, partitions=1, config=None):
    fs = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})],
                             operation_timeout=10)
    fs[name].result(timeout=30)
    assert eventually(lambda: partition_count(admin, name), lambda n: n == partitions) == partitions


def partition_count(admin, name):
    t = admin.list_topics(name, timeout=10).topics.get(name)
    return len(t.partitions) if t and t.error is None else -1


def records(n=N):
    return [(f"key-{i}".encode(), f"value-{i}-".encode() * (i + 1),
             [("idx", str(i).encode()), ("bin", bytes([i, 0, 255]))]) for i in range(n)]


def produce(bootstrap, topic, sent, **config):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, **config})
    delivered = []

    def on_delivery(err, msg):
        delivered.append((err, msg.partition(), msg.offset()))

    for k, v, h in sent:
        producer.produce(topic, key=k, value=v, headers=h, partition=0, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert [e for e, _, _ in delivered if e is not None] == []
    return [(p, o) for _, p, o in delivered]


def consume(bootstrap, topic, n, offset=OFFSET_BEGINNING):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                         "enable.auto.commit": False, "enable.auto.offset.store": False})
    consumer.assign([TopicPartition(topic, 0, offset)])
    got, deadline = [], time.monotonic() + 30
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_roundtrip_compressed(bootstrap, admin, topic_name, codec):
    create(admin, topic_name)
    sent = records()
    assert produce(bootstrap, topic_name, sent, **{"compression.type": codec}) == \
        [(0, i) for i in range(N)]

    got = consume(bootstrap, topic_name, N)
    assert [m.offset() for m in got] == list(range(N))
    assert [(m.key(), m.value(), m.headers()) for m in got] == sent


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(bootstrap, admin, topic_name, acks):
    create(admin, topic_name)
    sent = records(5)
    produce(bootstrap, topic_name, sent, acks=acks, **{"enable.idempotence": False})
    got = consume(bootstrap, topic_name, 5)
    assert [(m.key(), m.value()) for m in got] == [(k, v) for k, v, _ in sent]


def test_idempotent_producer(bootstrap, admin, topic_name):
    create(admin, topic_name)
    sent = records(50)
    offsets = produce(bootstrap, topic_name, sent, **{"enable.idempotence": True,
                                                      "compression.type": "lz4"})
    assert offsets == [(0, i) for i in range(50)]
    got = consume(bootstrap, topic_name, 50)
    assert [m.value() for m in got] == [v for _, v, _ in sent]


def test_delete_records_and_list_offsets(bootstrap, admin, topic_name):
    create(admin, topic_name)
    produce(bootstrap, topic_name, records(10))
    tp = TopicPartition(topic_name, 0)

    def offsets(spec):
        return admin.list_offsets({tp: spec})[tp].result(timeout=30).offset

    assert (offsets(OffsetSpec.earliest()), offsets(OffsetSpec.latest())) == (0, 10)
    deleted = admin.delete_records([TopicPartition(topic_name, 0, 4)])
    assert list(deleted.values())[0].result(timeout=30).low_watermark == 4
    assert (offsets(OffsetSpec.earliest()), offsets(OffsetSpec.latest())) == (4, 10)
    got = consume(bootstrap, topic_name, 6)
    assert [m.offset() for m in got] == list(range(4, 10))


def test_admin_create_describe_delete(admin, topic_name):
    create(admin, topic_name, partitions=3)
    desc = admin.describe_topics(TopicCollection([topic_name]))[topic_name].result(timeout=30)
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert all(p.leader.id == 1 and [r.id for r in p.replicas] == [1] for p in desc.partitions)

    admin.create_partitions([NewPartitions(topic_name, 4)])[topic_name].result(timeout=30)
    assert eventually(lambda: partition_count(admin, topic_name), lambda n: n == 4) == 4

    admin.delete_topics([topic_name], operation_timeout=10)[topic_name].result(timeout=30)
    topics = lambda: admin.list_topics(timeout=10).topics
    assert topic_name not in eventually(topics, lambda ts: topic_name not in ts)


def test_describe_and_alter_configs(admin, topic_name):
    create(admin, topic_name, config={"retention.ms": "3600000"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = admin.describe_configs([res])[res].result(timeout=30)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"

    entry = ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
    alter = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[entry])
    admin.incremental_alter_configs([alter])[alter].result(timeout=30)
    configs = admin.describe_configs([res])[res].result(timeout=30)
    assert configs["retention.ms"].value == "7200000"


def test_describe_cluster(admin):
    cluster = admin.describe_cluster().result(timeout=30)
    assert cluster.cluster_id
    assert [n.id for n in cluster.nodes] == [1]


def test_create_existing_topic_fails(admin, topic_name):
    create(admin, topic_name)
    with pytest.raises(KafkaException) as exc:
        create(admin, topic_name)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_metadata_lists_broker(admin):
    md = admin.list_topics(timeout=10)
    assert list(md.brokers) == [1]
    assert md.cluster_id
