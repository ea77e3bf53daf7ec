"""confluent-kafka 2.16 (librdkafka) consumer groups (classic protocol) against the broker.

Members subscribe() and are assigned partitions by the group coordinator (eager
range/roundrobin and cooperative-sticky), commit manually, and the group is
listed, described, its offsets listed and finally deleted with the AdminClient.
librdkafka runs the group protocol on its own threads, so one test thread can
poll several members in turn.
"""

import time

from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             KafkaError, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4
# 6000 ms is the broker's group.min.session.timeout.ms; the first rebalance of a
# group waits group.initial.rebalance.delay.ms (3000 ms), hence generous deadlines.
DEADLINE_S = 60


def admin_client(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "compat-confluent-groups"})


def create(admin, name, partitions):
    admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)[name].result(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        t = admin.list_topics(name, timeout=10).topics.get(name)
        if t and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} never showed {partitions} partitions")


def produce(bootstrap, topic, start, n):
    """Sends n records round-robin over the partitions; returns their (partition, offset)s."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    delivered = []
    for i in range(start, start + n):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                         partition=i % PARTITIONS,
                         on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())))
    assert producer.flush(30) == 0
    assert [e for e, _, _ in delivered if e is not None] == []
    return {(p, o) for _, p, o in delivered}


def consumer(bootstrap, group, name, **extra):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest", **extra})


def poll_into(c, seen, timeout=0.1):
    msg = c.poll(timeout)
    if msg is None:
        return False
    if msg.error():
        if msg.error().code() == KafkaError._PARTITION_EOF:
            return False
        raise KafkaException(msg.error())
    seen.add((msg.partition(), msg.offset()))
    return True


def commit(c):
    """Commits the positions of the current assignment; returns None, or the error
    (e.g. a rebalance under way, or nothing consumed yet)."""
    try:
        tps = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
        if not tps:
            return "nothing to commit"
        for tp in c.commit(offsets=tps, asynchronous=False):
            if tp.error is not None:
                return tp.error
        return None
    except KafkaException as e:
        return e


def committed(c, topic):
    tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    assert [tp.error for tp in tps] == [None] * PARTITIONS
    return {tp.partition: tp.offset for tp in tps}


def positions(c):
    return {tp.partition: tp.offset for tp in c.position(c.assignment())}


def caught_up(c, topic, ends):
    """Whether the member's position on each assigned partition is at the end offset.
    librdkafka reports no position (-1001) until it returns a record from a partition,
    so one assigned at an end offset committed by its previous owner counts if the
    commit is at the end."""
    pos = positions(c)
    if all(o == ends[p] for p, o in pos.items()):
        return True
    if any(o >= 0 and o != ends[p] for p, o in pos.items()):
        return False
    done = committed(c, topic)
    return all(o == ends[p] or done[p] == ends[p] for p, o in pos.items())


def group_offsets(admin, group):
    fs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    res = fs[group].result(30)
    assert res.group_id == group
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.error is None}


def list_groups(admin):
    res = admin.list_consumer_groups(request_timeout=30).result(30)
    assert res.errors == []
    return {g.group_id: g for g in res.valid}


def consume_until(members, seen, done, deadline_s=DEADLINE_S):
    """Polls the members in turn, committing after consuming, until done() or the deadline."""
    deadline = time.monotonic() + deadline_s
    while not done():
        if time.monotonic() > deadline:
            return False
        for c in members:
            got = False
            while poll_into(c, seen, 0.05):
                got = True
            if got:
                commit(c)
    return True


def test_group_eager_consume_commit_describe_and_delete(bootstrap, topic_name):
    admin = admin_client(bootstrap)
    create(admin, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    members = [consumer(bootstrap, group, f"ck-member-{i}") for i in (1, 2)]
    for c in members:
        c.subscribe([topic_name])
    seen = set()
    try:
        produced = produce(bootstrap, topic_name, 0, 100)
        for c in members:       # join while more records arrive
            poll_into(c, seen, 0.5)
        produced |= produce(bootstrap, topic_name, 100, 100)
        assert produced == {(p, o) for p in range(PARTITIONS) for o in range(50)}
        ends = {p: 50 for p in range(PARTITIONS)}

        def done():
            split = [{tp.partition for tp in c.assignment()} for c in members]
            return (produced <= seen and all(split) and not split[0] & split[1]
                    and split[0] | split[1] == set(range(PARTITIONS))
                    and all(caught_up(c, topic_name, ends) for c in members))

        ok = consume_until(members, seen, done)
        assert sorted(produced - seen) == []
        assert ok, f"assignments {[c.assignment() for c in members]}"
        assert [commit(c) for c in members] in ([None, None], [None, "nothing to commit"],
                                                ["nothing to commit", None])
        for c in members:
            assert committed(c, topic_name) == ends

        # Described while both members run: STABLE, both members, their assignments.
        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(30)
        assert desc.group_id == group
        assert desc.state == ConsumerGroupState.STABLE
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor in ("range", "roundrobin")
        assert desc.coordinator.id == 1
        by_client = {m.client_id: m for m in desc.members}
        assert sorted(by_client) == ["ck-member-1", "ck-member-2"]
        for i, c in enumerate(members, 1):
            described = {(tp.topic, tp.partition) for tp in by_client[f"ck-member-{i}"].assignment.topic_partitions}
            assert described == {(tp.topic, tp.partition) for tp in c.assignment()}
        assert len({m.member_id for m in desc.members}) == 2

        listed = list_groups(admin)
        assert group in listed
        assert listed[group].state == ConsumerGroupState.STABLE
        assert not listed[group].is_simple_consumer_group
    finally:
        for c in members:
            c.close()

    assert group_offsets(admin, group) == ends
    listed = list_groups(admin)
    assert group in listed and listed[group].state == ConsumerGroupState.EMPTY
    desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(30)
    assert desc.state == ConsumerGroupState.EMPTY and desc.members == []

    admin.delete_consumer_groups([group], request_timeout=30)[group].result(30)
    assert group not in list_groups(admin)
    assert group_offsets(admin, group) == {}


def test_group_cooperative_sticky_member_joins_midway(bootstrap, topic_name):
    admin = admin_client(bootstrap)
    create(admin, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    events = {1: [], 2: []}   # non-empty incremental assigns / revokes per member

    def record(i, kind, tps):
        if tps:
            events[i].append((kind, {tp.partition for tp in tps}))

    def member(i):
        c = consumer(bootstrap, group, f"ck-coop-{i}",
                     **{"partition.assignment.strategy": "cooperative-sticky"})
        c.subscribe([topic_name],
                    on_assign=lambda _, tps: record(i, "assign", tps),
                    on_revoke=lambda _, tps: record(i, "revoke", tps))
        return c

    first = member(1)
    members = [first]
    seen = set()
    try:
        produced = produce(bootstrap, topic_name, 0, 80)
        # The first member alone gets every partition and consumes the first records.
        alone = lambda: produced <= seen and len(first.assignment()) == PARTITIONS \
            and positions(first) == {p: 20 for p in range(PARTITIONS)}
        assert consume_until(members, seen, alone), f"first member: {first.assignment()} {events}"
        assert commit(first) is None
        assert committed(first, topic_name) == {p: 20 for p in range(PARTITIONS)}
        assert events[1] == [("assign", set(range(PARTITIONS)))]

        # A second member joins mid-way, while more records are produced.
        second = member(2)
        members.append(second)
        produced |= produce(bootstrap, topic_name, 80, 80)
        ends = {p: 40 for p in range(PARTITIONS)}
        assert produced == {(p, o) for p in range(PARTITIONS) for o in range(40)}

        def done():
            split = [{tp.partition for tp in c.assignment()} for c in members]
            return (produced <= seen and [len(s) for s in split] == [2, 2]
                    and split[0] | split[1] == set(range(PARTITIONS))
                    and all(caught_up(c, topic_name, ends) for c in members))

        ok = consume_until(members, seen, done)
        assert sorted(produced - seen) == []
        assert ok, f"assignments {[c.assignment() for c in members]}, callbacks {events}"
        kept = {tp.partition for tp in first.assignment()}
        moved = {tp.partition for tp in second.assignment()}
        # Cooperative: the first member gave up only what moved (no revoke-everything).
        assert events[1] == [("assign", set(range(PARTITIONS))), ("revoke", moved)], events
        assert events[2] == [("assign", moved)], events
        assert kept | moved == set(range(PARTITIONS))
        assert [commit(c) for c in members] in ([None, None], [None, "nothing to commit"],
                                                ["nothing to commit", None])
        assert committed(second, topic_name) == ends
        assert group_offsets(admin, group) == ends

        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(30)
        assert desc.state == ConsumerGroupState.STABLE
        assert desc.partition_assignor == "cooperative-sticky"
        assert {m.client_id: {tp.partition for tp in m.assignment.topic_partitions}
                for m in desc.members} == {"ck-coop-1": kept, "ck-coop-2": moved}
    finally:
        for c in members:
            c.close()
