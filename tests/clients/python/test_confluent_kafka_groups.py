"""confluent-kafka 2.16 (librdkafka) consumer groups (classic protocol) against the broker.

Members subscribe() and are assigned partitions by the group coordinator (eager
range/roundrobin and cooperative-sticky), commit manually, and the group is
listed, described, its offsets listed and finally deleted with the AdminClient.
Also: a member killed (session expiry) or frozen past its session, and a broker
restarted under a group (own_broker). librdkafka runs the group protocol on its
own threads, so one test thread can poll several members in turn.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             ConsumerGroupType, KafkaError, KafkaException, Producer,
                             TopicPartition)
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


def list_groups(admin, **filters):
    res = admin.list_consumer_groups(request_timeout=30, **filters).result(30)
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
        assert listed[group].type == ConsumerGroupType.CLASSIC
        assert not listed[group].is_simple_consumer_group
        # Filtered by state (ListGroups v4+) and type (v5+).
        assert group in list_groups(admin, states={ConsumerGroupState.STABLE})
        assert group not in list_groups(admin, states={ConsumerGroupState.EMPTY})
        assert group in list_groups(admin, types={ConsumerGroupType.CLASSIC})
        assert group not in list_groups(admin, types={ConsumerGroupType.CONSUMER})

        # A group with members cannot be deleted.
        with pytest.raises(KafkaException) as exc:
            admin.delete_consumer_groups([group], request_timeout=30)[group].result(30)
        assert exc.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
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


CRASHING_MEMBER = r"""
import sys
from confluent_kafka import Consumer
bootstrap, group, topic = sys.argv[1:]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "ck-crashing",
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
              "enable.auto.commit": False, "auto.offset.reset": "earliest"})
c.subscribe([topic], on_assign=lambda _, tps: print("assigned", sorted(tp.partition for tp in tps), flush=True))
while True:
    c.poll(0.2)
"""


def test_group_member_killed_session_expires(bootstrap, topic_name, tmp_path):
    """A member killed without LeaveGroup is expired after session.timeout.ms and its
    partitions are reassigned to the surviving member."""
    admin = admin_client(bootstrap)
    create(admin, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    script = tmp_path / "member.py"
    script.write_text(CRASHING_MEMBER)
    crashing = subprocess.Popen([sys.executable, str(script), bootstrap, group, topic_name],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in crashing.stdout], daemon=True).start()
    survivor = consumer(bootstrap, group, "ck-survivor")
    survivor.subscribe([topic_name])
    seen = set()
    try:
        produced = produce(bootstrap, topic_name, 0, 40)
        # Both members share the partitions (the child prints each assignment it gets).
        child = None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            poll_into(survivor, seen, 0.1)
            while not lines.empty():
                child = lines.get()
            mine = {tp.partition for tp in survivor.assignment()}
            if len(mine) == 2 and child == f"assigned {sorted(set(range(PARTITIONS)) - mine)}\n":
                break
        assert len(mine) == 2 and child is not None, f"survivor {mine}, child printed {child!r}"

        crashing.kill()     # no LeaveGroup: only the session timeout can remove it
        crashing.wait(10)
        produced |= produce(bootstrap, topic_name, 40, 40)
        ends = {p: 20 for p in range(PARTITIONS)}
        done = lambda: ({tp.partition for tp in survivor.assignment()} == set(range(PARTITIONS))
                        and produced <= seen and caught_up(survivor, topic_name, ends))
        ok = consume_until([survivor], seen, done)
        assert ok, f"survivor assignment {survivor.assignment()}, missing {sorted(produced - seen)}"
        assert commit(survivor) is None
        assert group_offsets(admin, group) == ends
        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(30)
        assert [m.client_id for m in desc.members] == ["ck-survivor"]
    finally:
        if crashing.poll() is None:
            crashing.kill()
            crashing.wait(10)
        survivor.close()


def test_group_offsets_survive_broker_restart(own_broker, topic_name):
    """Committed offsets and the group itself are durable: after the broker restarts on
    the same data, a member of the group resumes at the commits."""
    bootstrap = own_broker.addr
    admin = admin_client(bootstrap)
    create(admin, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    produced = produce(bootstrap, topic_name, 0, 40)
    ends = {p: 10 for p in range(PARTITIONS)}
    before, seen = consumer(bootstrap, group, "ck-before"), set()
    before.subscribe([topic_name])
    try:
        done = lambda: (produced <= seen and len(before.assignment()) == PARTITIONS
                        and caught_up(before, topic_name, ends))
        assert consume_until([before], seen, done), f"{before.assignment()} {sorted(produced - seen)}"
        assert commit(before) in (None, "nothing to commit")
        assert committed(before, topic_name) == ends
    finally:
        before.close()
    assert group_offsets(admin, group) == ends
    del admin

    own_broker.stop()
    own_broker.start()

    admin = admin_client(bootstrap)
    assert group_offsets(admin, group) == ends
    listed = list_groups(admin)
    assert group in listed and listed[group].state == ConsumerGroupState.EMPTY
    more = produce(bootstrap, topic_name, 40, 40)
    after, seen = consumer(bootstrap, group, "ck-after"), set()
    after.subscribe([topic_name])
    new_ends = {p: 20 for p in range(PARTITIONS)}
    try:
        done = lambda: (more <= seen and len(after.assignment()) == PARTITIONS
                        and caught_up(after, topic_name, new_ends))
        assert consume_until([after], seen, done), f"{after.assignment()} {sorted(more - seen)}"
        assert sorted(seen) == sorted(more), "re-read records committed before the restart"
        assert commit(after) is None
    finally:
        after.close()
    assert group_offsets(admin, group) == new_ends


def test_group_member_paused_past_session_rejoins(bootstrap, topic_name, tmp_path):
    """A member frozen (SIGSTOP) past session.timeout.ms is expired and its partitions
    move; once resumed it learns it is unknown (UNKNOWN_MEMBER_ID / rebalance), rejoins,
    and the partitions are shared again."""
    admin = admin_client(bootstrap)
    create(admin, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    script = tmp_path / "member.py"
    script.write_text(CRASHING_MEMBER)
    paused = subprocess.Popen([sys.executable, str(script), bootstrap, group, topic_name],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in paused.stdout], daemon=True).start()
    survivor = consumer(bootstrap, group, "ck-survivor")
    survivor.subscribe([topic_name])
    seen, child = set(), [None]

    def poll_both():
        poll_into(survivor, seen, 0.1)
        while not lines.empty():
            child[0] = lines.get()
        return {tp.partition for tp in survivor.assignment()}

    def shared(timeout=DEADLINE_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = poll_both()
            if len(mine) == 2 and child[0] == f"assigned {sorted(set(range(PARTITIONS)) - mine)}\n":
                return True
        return False

    try:
        assert shared(), f"survivor {survivor.assignment()}, child printed {child[0]!r}"
        os.kill(paused.pid, signal.SIGSTOP)
        child[0] = None
        deadline = time.monotonic() + DEADLINE_S
        while len(poll_both()) != PARTITIONS and time.monotonic() < deadline:
            pass
        assert len(poll_both()) == PARTITIONS, "the frozen member's partitions never moved"
        os.kill(paused.pid, signal.SIGCONT)
        assert shared(), f"survivor {survivor.assignment()}, child printed {child[0]!r}"
        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(30)
        assert desc.state == ConsumerGroupState.STABLE
        assert sorted(m.client_id for m in desc.members) == ["ck-crashing", "ck-survivor"]
    finally:
        if paused.poll() is None:
            os.kill(paused.pid, signal.SIGCONT)
            paused.kill()
            paused.wait(10)
        survivor.close()


def test_group_members_survive_broker_restart(own_broker, topic_name):
    """Two members keep consuming and committing across a broker restart, and end with
    every record committed. Membership is not stored: after the restart the coordinator
    answers UNKNOWN_MEMBER_ID until a member rejoins, so commits are retried until both
    have rejoined (librdkafka rejoins by itself)."""
    bootstrap = own_broker.addr
    admin = admin_client(bootstrap)
    create(admin, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    members = [consumer(bootstrap, group, f"ck-restart-{i}") for i in (1, 2)]
    for c in members:
        c.subscribe([topic_name])
    seen = set()

    def settled(produced, ends):
        split = [{tp.partition for tp in c.assignment()} for c in members]
        return (produced <= seen and all(split) and not split[0] & split[1]
                and split[0] | split[1] == set(range(PARTITIONS))
                and all(caught_up(c, topic_name, ends) for c in members))

    try:
        produced = produce(bootstrap, topic_name, 0, 40)
        ends = {p: 10 for p in range(PARTITIONS)}
        assert consume_until(members, seen, lambda: settled(produced, ends)), \
            f"{[c.assignment() for c in members]} {sorted(produced - seen)}"
        assert [commit(c) for c in members] in ([None, None], [None, "nothing to commit"],
                                                ["nothing to commit", None])

        own_broker.stop()
        own_broker.start()

        produced |= produce(bootstrap, topic_name, 40, 40)
        ends = {p: 20 for p in range(PARTITIONS)}
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert consume_until(members, seen, lambda: settled(produced, ends)), \
                f"{[c.assignment() for c in members]} {sorted(produced - seen)}"
            results = [commit(c) for c in members]
            if results in ([None, None], [None, "nothing to commit"], ["nothing to commit", None]):
                break
            assert time.monotonic() < deadline, f"commits kept failing: {results}"
            # Poll so librdkafka can finish rejoining (its rebalance runs through poll()).
            for c in members:
                for _ in range(10):
                    poll_into(c, seen, 0.05)
        admin = admin_client(bootstrap)
        assert group_offsets(admin, group) == ends
        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(30)
        assert desc.state == ConsumerGroupState.STABLE
        assert sorted(m.client_id for m in desc.members) == ["ck-restart-1", "ck-restart-2"]
    finally:
        for c in members:
            c.close()
