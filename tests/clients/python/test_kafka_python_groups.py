"""kafka-python 3.0 consumer groups (classic protocol) against the broker.

Members subscribe() and let the group coordinator assign partitions
(FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup), commit with
OffsetCommit and read commits back with OffsetFetch (consumer and admin).
Each member runs in its own thread: a JoinGroup blocks until every member has
rejoined, so members polled in turn from one thread could stall each other.
"""

import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import CommitFailedError, NoError

PARTITIONS = 4
# 6000 ms is the broker's group.min.session.timeout.ms; the first rebalance of a
# group waits group.initial.rebalance.delay.ms (3000 ms), hence generous deadlines.
GROUP_CONFIG = dict(session_timeout_ms=6000, heartbeat_interval_ms=1000,
                    enable_auto_commit=False, auto_offset_reset="earliest")
DEADLINE_S = 60


def wait_until(ok, timeout=DEADLINE_S, step=0.1):
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def create(bootstrap, name, partitions):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kp-groups")
    try:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                            wait_for_metadata=True)
    finally:
        admin.close()


def produce(bootstrap, topic, start, n, pause=0.0):
    """Sends n records round-robin over the partitions; returns their (partition, offset)s."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    futures = []
    for i in range(start, start + n):
        futures.append(producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                                     partition=i % PARTITIONS))
        if pause and i % 10 == 9:
            producer.flush(timeout=30)
            time.sleep(pause)
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    return {(m.partition, m.offset) for m in metas}


def end_offsets(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def group_offsets(bootstrap, group):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kp-groups")
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items()}


class admin_client:
    def __init__(self, bootstrap):
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kp-groups")

    def __enter__(self):
        return self.admin

    def __exit__(self, *_):
        self.admin.close()


def assigned(member):
    """Partition numbers in a described member's (decoded) assignment."""
    a = member["member_assignment"]
    pairs = a.assigned_partitions if hasattr(a, "assigned_partitions") else a["assigned_partitions"]
    return {p for t in pairs for p in (t[1] if isinstance(t, (tuple, list)) else t["partitions"])}


class Member(threading.Thread):
    """A subscribed consumer that polls, commits after each non-empty poll and, once
    told to stop, commits its positions and closes (LeaveGroup)."""

    def __init__(self, bootstrap, topic, group, name, seen, lock, config=GROUP_CONFIG):
        super().__init__(name=name, daemon=True)
        self.config = config
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.seen, self.lock = seen, lock
        self.stop = threading.Event()
        self.assignment = set()      # partition numbers, as of the last poll
        self.positions = {}          # partition -> position, as of the last poll
        self.final_assignment = None
        self.final_commit = None
        self.error = None

    def run(self):
        try:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                     client_id=self.name, **self.config)
            consumer.subscribe([self.topic])
            try:
                while not self.stop.is_set():
                    batches = consumer.poll(timeout_ms=200)
                    with self.lock:
                        for tp, recs in batches.items():
                            self.seen.update((tp.partition, r.offset) for r in recs)
                    if batches:
                        try:
                            consumer.commit()
                        except CommitFailedError:
                            pass    # a rebalance took partitions away; the new owner re-reads
                    assigned = consumer.assignment()
                    positions = {tp.partition: consumer.position(tp) for tp in assigned}
                    with self.lock:
                        self.assignment = {tp.partition for tp in assigned}
                        self.positions = positions
                self.final_assignment = {tp.partition for tp in consumer.assignment()}
                consumer.commit()
                self.final_commit = True
            finally:
                consumer.close(autocommit=False)
        except Exception as e:  # reported by the test thread
            self.error = e


@pytest.mark.parametrize("api_version", [None, (0, 11), (1, 1), (2, 3)],
                         ids=["latest", "0.11", "1.1", "2.3"])
def test_group_two_members_consume_commit_and_resume(bootstrap, topic_name, api_version):
    """api_version makes kafka-python use the request versions of a broker of that Kafka
    version (None: the newest both sides support), so older JoinGroup, SyncGroup,
    Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch versions are exercised too.
    (0.10.x would need Fetch v3, which Kafka 4, like the broker, no longer serves: KIP-896.)"""
    if api_version:
        GROUP_CONFIG_V = {**GROUP_CONFIG, "api_version": api_version}
    else:
        GROUP_CONFIG_V = GROUP_CONFIG
    create(bootstrap, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    fresh = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, **GROUP_CONFIG_V)
    try:   # nothing committed yet
        assert [fresh.committed(TopicPartition(topic_name, p)) for p in range(PARTITIONS)] == [None] * 4
    finally:
        fresh.close(autocommit=False)
    seen, lock = set(), threading.Lock()
    members = [Member(bootstrap, topic_name, group, f"kp-member-{i}", seen, lock, GROUP_CONFIG_V)
               for i in (1, 2)]
    for m in members:
        m.start()
    try:
        # Produced while the members join, are assigned, consume and commit.
        produced = produce(bootstrap, topic_name, 0, 200, pause=0.05)
        ends = end_offsets(bootstrap, topic_name)
        assert ends == {p: 50 for p in range(PARTITIONS)}
        assert produced == {(p, o) for p in range(PARTITIONS) for o in range(50)}

        def done():
            with lock:
                if not produced <= seen:
                    return False
                split = [m.assignment for m in members]
                positions = {p: o for m in members for p, o in m.positions.items()}
            # Both members own partitions, disjointly, covering the topic, caught up to the end.
            return (all(split) and not split[0] & split[1]
                    and split[0] | split[1] == set(range(PARTITIONS)) and positions == ends)

        ok = wait_until(lambda: done() or any(m.error or not m.is_alive() for m in members))
        assert [m.error for m in members] == [None, None]
        with lock:
            missing = sorted(produced - seen)
            state = [(m.name, sorted(m.assignment), m.positions) for m in members]
        assert missing == [], f"records never consumed; members: {state}"
        assert ok, f"group never split the partitions between both members at the end: {state}"

        # Described (DescribeGroups) and listed (ListGroups) while both members run.
        with admin_client(bootstrap) as admin:
            desc = admin.describe_groups([group])[group]
            listed = {g["group_id"]: g for g in admin.list_groups()}
        assert desc["error"] is None
        assert desc["group_state"] == "Stable" and desc["protocol_type"] == "consumer"
        assert {m["client_id"]: assigned(m) for m in desc["members"]} == \
            {m.name: m.assignment for m in members}
        assert listed[group]["protocol_type"] == "consumer"
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(30)
    assert [m.error for m in members] == [None, None]
    assert [m.final_commit for m in members] == [True, True]
    split = [m.final_assignment for m in members]
    assert split[0] and split[1] and split[0] | split[1] == set(range(PARTITIONS))
    assert not split[0] & split[1]

    # Commits read back through the admin client (OffsetFetch for all partitions).
    assert group_offsets(bootstrap, group) == ends

    # Both members left. More records; a new member of the group resumes from the commits.
    more = produce(bootstrap, topic_name, 200, 40)
    assert more == {(p, o) for p in range(PARTITIONS) for o in range(50, 60)}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             client_id="kp-member-3", **GROUP_CONFIG_V)
    try:
        tps = [TopicPartition(topic_name, p) for p in range(PARTITIONS)]
        assert {tp.partition: consumer.committed(tp) for tp in tps} == ends
        consumer.subscribe([topic_name])
        got = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < len(more) and time.monotonic() < deadline:
            for tp, recs in consumer.poll(timeout_ms=500).items():
                got.extend((tp.partition, r.offset) for r in recs)
        assert sorted(got) == sorted(more), "the new member did not resume at the committed offsets"
        assert {tp.partition for tp in consumer.assignment()} == set(range(PARTITIONS))
        consumer.commit()
        new_ends = {p: 60 for p in range(PARTITIONS)}
        assert {tp.partition: consumer.committed(tp) for tp in tps} == new_ends
    finally:
        consumer.close(autocommit=False)
    assert group_offsets(bootstrap, group) == new_ends

    # No members left: Empty. Offsets of one partition deleted (OffsetDelete), then the group (DeleteGroups).
    with admin_client(bootstrap) as admin:
        desc = admin.describe_groups([group])[group]
        assert (desc["error"], desc["group_state"], desc["members"]) == (None, "Empty", [])
        tp0 = TopicPartition(topic_name, 0)
        assert admin.delete_group_offsets(group, [tp0]) == {tp0: NoError}
        assert group_offsets(bootstrap, group) == {p: 60 for p in range(1, PARTITIONS)}
        assert admin.delete_groups([group]) == {group: "OK"}
        assert group not in {g["group_id"] for g in admin.list_groups()}
        assert group_offsets(bootstrap, group) == {}


def test_group_member_leaves_partitions_move_and_groups_are_independent(bootstrap, topic_name):
    """Three members share four partitions; one leaves (LeaveGroup) and the two others
    take over its partitions from its commits. A second group with auto-commit reads
    the same topic with its own offsets."""
    create(bootstrap, topic_name, PARTITIONS)
    group = f"grp-{topic_name}"
    seen, lock = set(), threading.Lock()
    members = [Member(bootstrap, topic_name, group, f"kp-three-{i}", seen, lock) for i in (1, 2, 3)]
    for m in members:
        m.start()

    def settled(ms, ends, produced):
        with lock:
            split = [m.assignment for m in ms]
            positions = {p: o for m in ms for p, o in m.positions.items()}
            caught = produced <= seen
        union = set().union(*split)
        return (caught and all(split) and sum(len(s) for s in split) == PARTITIONS
                and union == set(range(PARTITIONS)) and positions == ends)

    try:
        produced = produce(bootstrap, topic_name, 0, 80)
        ends = {p: 20 for p in range(PARTITIONS)}
        ok = wait_until(lambda: settled(members, ends, produced) or any(m.error for m in members))
        assert [m.error for m in members] == [None] * 3
        assert ok, [(m.name, m.assignment, m.positions) for m in members]
        leaving = members.pop()
        owned = set(leaving.assignment)
        leaving.stop.set()
        leaving.join(30)
        assert (leaving.error, leaving.final_commit) == (None, True)

        produced |= produce(bootstrap, topic_name, 80, 40)
        ends = {p: 30 for p in range(PARTITIONS)}
        ok = wait_until(lambda: settled(members, ends, produced) or any(m.error for m in members))
        assert [m.error for m in members] == [None] * 2
        assert ok, [(m.name, m.assignment, m.positions) for m in members]
        assert owned <= members[0].assignment | members[1].assignment
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(30)
    assert [(m.error, m.final_commit) for m in members] == [(None, True)] * 2
    assert group_offsets(bootstrap, group) == ends

    # Another group: auto-commit, committed on close; the first group's offsets are untouched.
    produce(bootstrap, topic_name, 120, 40)
    other = f"other-{topic_name}"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=other, client_id="kp-other",
                             **{**GROUP_CONFIG, "enable_auto_commit": True})
    consumer.subscribe([topic_name])
    got, deadline = set(), time.monotonic() + DEADLINE_S
    try:
        while len(got) < 160 and time.monotonic() < deadline:
            for tp, recs in consumer.poll(timeout_ms=500).items():
                got.update((tp.partition, r.offset) for r in recs)
    finally:
        consumer.close()     # commits the consumed positions (auto-commit)
    assert got == {(p, o) for p in range(PARTITIONS) for o in range(40)}
    assert group_offsets(bootstrap, other) == {p: 40 for p in range(PARTITIONS)}
    assert group_offsets(bootstrap, group) == ends
