"""kafka-python 3.0 against the broker: produce/consume, admin, configs, errors.

Consumers use assign() with explicit offsets and group_id=None: no group APIs.
"""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

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
    client = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kafka-python")
    yield client
    client.close()


def create(admin, name, partitions=1, configs=None):
    admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                                "configs": configs or {}}}, wait_for_metadata=True)


def records(n=N):
    return [(f"key-{i}".encode(), f"value-{i}-".encode() * (i + 1),
             [("idx", str(i).encode()), ("bin", bytes([i, 0, 255]))]) for i in range(n)]


def produce(bootstrap, topic, sent, **config):
    producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
    futures = [producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in sent]
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    return metas


def consume(bootstrap, topic, n, offset=0, partition=0):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, offset)
    got, deadline = [], time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            got.extend(batch)
    consumer.close()
    return got


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_roundtrip_compressed(bootstrap, admin, topic_name, codec):
    create(admin, topic_name)
    sent = records()
    metas = produce(bootstrap, topic_name, sent, compression_type=codec, linger_ms=50)
    assert [(m.partition, m.offset) for m in metas] == [(0, i) for i in range(N)]

    got = consume(bootstrap, topic_name, N)
    assert [r.offset for r in got] == list(range(N))
    assert [(r.key, r.value, list(r.headers)) for r in got] == sent


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks(bootstrap, admin, topic_name, acks):
    create(admin, topic_name)
    sent = records(5)
    produce(bootstrap, topic_name, sent, acks=acks, enable_idempotence=False)
    got = consume(bootstrap, topic_name, 5)
    assert [(r.key, r.value) for r in got] == [(k, v) for k, v, _ in sent]


def test_offsets_and_seek(bootstrap, admin, topic_name):
    create(admin, topic_name)
    produce(bootstrap, topic_name, records(10))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tp = TopicPartition(topic_name, 0)
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 10}
    consumer.close()
    got = consume(bootstrap, topic_name, 3, offset=7)
    assert [(r.offset, r.key) for r in got] == [(i, f"key-{i}".encode()) for i in (7, 8, 9)]


def test_admin_create_describe_delete(admin, topic_name):
    create(admin, topic_name, partitions=3)
    assert topic_name in admin.list_topics()
    (desc,) = admin.describe_topics([topic_name])
    assert desc["error_code"] == 0
    assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2]
    assert all(p["leader_id"] == 1 and p["replica_nodes"] == [1] for p in desc["partitions"])

    admin.create_partitions({topic_name: 5})
    count = lambda: len(admin.describe_topics([topic_name])[0]["partitions"])
    assert eventually(count, lambda n: n == 5) == 5

    admin.delete_topics([topic_name])
    assert topic_name not in eventually(admin.list_topics, lambda ts: topic_name not in ts)


def test_describe_and_alter_configs(admin, topic_name):
    create(admin, topic_name, configs={"retention.ms": "3600000"})
    res = ConfigResource(ConfigResourceType.TOPIC, topic_name)
    configs = admin.describe_configs([res], config_filter="all")["topic"][topic_name]
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert "cleanup.policy" in configs

    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name,
                                        {"retention.ms": "7200000"})])
    configs = admin.describe_configs([res], config_filter="all")["topic"][topic_name]
    assert configs["retention.ms"]["value"] == "7200000"


def test_describe_cluster(admin):
    cluster = admin.describe_cluster()
    assert cluster["cluster_id"]
    assert [b["broker_id"] for b in cluster["brokers"]] == [1]


def test_create_existing_topic_fails(admin, topic_name):
    create(admin, topic_name)
    with pytest.raises(TopicAlreadyExistsError):
        create(admin, topic_name)


def test_delete_unknown_topic_fails(admin, topic_name):
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.delete_topics([topic_name])
