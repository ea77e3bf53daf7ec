package io.chronik.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.GroupSubscribedToTopicException;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Consumer groups, classic protocol (group.protocol=classic): KafkaConsumer members
 * subscribe() and are assigned partitions by the broker's group coordinator, commit
 * with commitSync(), and the Admin client lists, describes, reads the offsets of and
 * deletes the group. The broker's minimum session timeout is 6 s and a new group's
 * first rebalance waits group.initial.rebalance.delay.ms (3 s): deadlines are generous.
 */
class GroupCompatTest {
  static final int PARTITIONS = 4;
  static final int PER_PARTITION = 50;
  static final Duration DEADLINE = Duration.ofSeconds(60);
  static String bootstrap;
  static Admin admin;

  @BeforeAll
  static void connect() {
    bootstrap = System.getProperty("CHRONIK_BOOTSTRAP", System.getenv("CHRONIK_BOOTSTRAP"));
    assertNotNull(bootstrap, "set CHRONIK_BOOTSTRAP=host:port");
    admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        AdminClientConfig.CLIENT_ID_CONFIG, "compat-java-groups-admin"));
  }

  @AfterAll
  static void close() {
    if (admin != null) admin.close(Duration.ofSeconds(30));
  }

  static boolean waitUntil(BooleanSupplier ok) throws InterruptedException {
    long deadline = System.nanoTime() + DEADLINE.toNanos();
    while (!ok.getAsBoolean()) {
      if (System.nanoTime() > deadline) return false;
      Thread.sleep(100);
    }
    return true;
  }

  static Set<Integer> partitions(Collection<TopicPartition> tps) {
    return tps.stream().map(TopicPartition::partition).collect(Collectors.toCollection(TreeSet::new));
  }

  /** A subscribed member on its own thread (KafkaConsumer is single-threaded). */
  static final class Member implements Runnable {
    final String clientId, topic, group;
    final Set<String> seen;
    final Map<String, Object> extra;
    final List<String> events = Collections.synchronizedList(new ArrayList<>());
    final AtomicBoolean stop = new AtomicBoolean();
    final AtomicReference<Set<Integer>> assignment = new AtomicReference<>(Set.of());
    final AtomicReference<Map<Integer, Long>> positions = new AtomicReference<>(Map.of());
    final AtomicReference<Throwable> error = new AtomicReference<>();
    final AtomicReference<String> memberId = new AtomicReference<>("");
    /** Set to make the member stall once (slow processing) before its next poll. */
    volatile long stallMs;
    volatile Set<Integer> finalAssignment;
    volatile boolean finalCommit;
    final Thread thread;

    Member(String clientId, String topic, String group, Set<String> seen) {
      this(clientId, topic, group, seen, Map.of());
    }

    Member(String clientId, String topic, String group, Set<String> seen, Map<String, Object> extra) {
      this.extra = extra;
      this.clientId = clientId;
      this.topic = topic;
      this.group = group;
      this.seen = seen;
      this.thread = new Thread(this, clientId);
      thread.setDaemon(true);
    }

    @Override
    public void run() {
      Map<String, Object> cc = new HashMap<>(extra);
      cc.putAll(Map.of(
          ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
          ConsumerConfig.GROUP_ID_CONFIG, group,
          ConsumerConfig.CLIENT_ID_CONFIG, clientId,
          ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
          ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest"));
      // KIP-848 members take their timeouts from the broker and refuse these settings.
      if (!"consumer".equals(extra.get(ConsumerConfig.GROUP_PROTOCOL_CONFIG))) {
        cc.putAll(Map.of(
            ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic",
            ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000,
            ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000));
      }
      try (var consumer = new KafkaConsumer<>(cc, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
        consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
          @Override
          public void onPartitionsRevoked(Collection<TopicPartition> tps) {
            if (!tps.isEmpty()) events.add("revoke " + partitions(tps));
          }

          @Override
          public void onPartitionsAssigned(Collection<TopicPartition> tps) {
            if (!tps.isEmpty()) events.add("assign " + partitions(tps));
          }
        });
        while (!stop.get()) {
          var records = consumer.poll(Duration.ofMillis(200));
          for (ConsumerRecord<byte[], byte[]> r : records) seen.add(r.partition() + "@" + r.offset());
          if (!records.isEmpty()) {
            try {
              consumer.commitSync();
            } catch (CommitFailedException | RebalanceInProgressException e) {
              // partitions moved; their new owner re-reads from the last commit
            }
          }
          Map<Integer, Long> pos = new TreeMap<>();
          for (var tp : consumer.assignment()) pos.put(tp.partition(), consumer.position(tp));
          positions.set(pos);
          assignment.set(partitions(consumer.assignment()));
          memberId.set(consumer.groupMetadata().memberId());
          if (stallMs > 0) {
            long ms = stallMs;
            stallMs = 0;
            Thread.sleep(ms);
          }
        }
        finalAssignment = partitions(consumer.assignment());
        consumer.commitSync();
        finalCommit = true;
      } catch (Throwable t) {
        error.set(t);
      }
    }
  }

  static Set<String> produce(String topic, int from, int n) throws Exception {
    Map<String, Object> pc = Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        ProducerConfig.LINGER_MS_CONFIG, 5);
    Set<String> produced = new TreeSet<>();
    try (var producer = new KafkaProducer<>(pc, new ByteArraySerializer(), new ByteArraySerializer())) {
      var futures = new ArrayList<java.util.concurrent.Future<org.apache.kafka.clients.producer.RecordMetadata>>();
      for (int i = from; i < from + n; i++) {
        futures.add(producer.send(new ProducerRecord<>(topic, i % PARTITIONS,
            ("k" + i).getBytes(StandardCharsets.UTF_8), ("v" + i).getBytes(StandardCharsets.UTF_8))));
        if (i % 20 == 19) {
          producer.flush();
          Thread.sleep(50);
        }
      }
      producer.flush();
      for (var f : futures) {
        var m = f.get(30, TimeUnit.SECONDS);
        produced.add(m.partition() + "@" + m.offset());
      }
    }
    return produced;
  }

  static Set<String> groupIds() throws Exception {
    @SuppressWarnings("deprecation")
    var listed = admin.listConsumerGroups().all().get(30, TimeUnit.SECONDS);
    return listed.stream().map(ConsumerGroupListing::groupId).collect(Collectors.toSet());
  }

  @SuppressWarnings("deprecation")
  static Optional<ConsumerGroupListing> listing(String group) throws Exception {
    return admin.listConsumerGroups().all().get(30, TimeUnit.SECONDS).stream()
        .filter(g -> g.groupId().equals(group)).findFirst();
  }

  static Map<Integer, Long> committedOffsets(String group) throws Exception {
    Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(group)
        .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
    Map<Integer, Long> out = new TreeMap<>();
    offsets.forEach((tp, om) -> out.put(tp.partition(), om == null ? null : om.offset()));
    return out;
  }

  static void createTopic(String topic) throws Exception {
    admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
    assertTrue(waitUntil(() -> {
      try {
        return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size() == PARTITIONS;
      } catch (Exception e) {
        return false;
      }
    }));
  }

  static Map<Integer, Long> uniform(long offset) {
    Map<Integer, Long> m = new TreeMap<>();
    for (int p = 0; p < PARTITIONS; p++) m.put(p, offset);
    return m;
  }

  static Map<Integer, Long> positionsOf(List<Member> members) {
    Map<Integer, Long> pos = new TreeMap<>();
    for (var m : members) pos.putAll(m.positions.get());
    return pos;
  }

  @Test
  void cooperativeStickySecondMemberJoinsMidway() throws Exception {
    String topic = "java-coop-" + UUID.randomUUID().toString().substring(0, 8);
    String group = "java-grp-" + topic;
    createTopic(topic);
    Set<String> seen = ConcurrentHashMap.newKeySet();
    Map<String, Object> coop = Map.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
        "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
    Member first = new Member("java-coop-1", topic, group, seen, coop);
    Member second = new Member("java-coop-2", topic, group, seen, coop);
    List<Member> members = List.of(first, second);
    first.thread.start();
    try {
      Set<String> produced = new TreeSet<>(produce(topic, 0, PARTITIONS * 20));
      boolean alone = waitUntil(() -> first.error.get() != null || (seen.containsAll(produced)
          && first.assignment.get().size() == PARTITIONS && positionsOf(List.of(first)).equals(uniform(20))));
      assertNull(first.error.get());
      assertTrue(alone, "first member: " + first.assignment.get() + " " + first.positions.get() + " " + first.events);
      assertEquals(List.of("assign [0, 1, 2, 3]"), List.copyOf(first.events));

      second.thread.start();
      produced.addAll(produce(topic, PARTITIONS * 20, PARTITIONS * 20));
      assertEquals(PARTITIONS * 40, produced.size());
      boolean split = waitUntil(() -> members.stream().anyMatch(m -> m.error.get() != null)
          || (seen.containsAll(produced) && first.assignment.get().size() == 2
              && second.assignment.get().size() == 2 && positionsOf(members).equals(uniform(40))));
      for (var m : members) assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(split, members.stream().map(m -> m.clientId + "=" + m.assignment.get() + " "
          + m.positions.get() + " " + m.events).toList().toString());
      Set<Integer> moved = second.assignment.get();
      // Cooperative: the first member gave up only the partitions that moved.
      assertEquals(List.of("assign [0, 1, 2, 3]", "revoke " + moved), List.copyOf(first.events));
      assertEquals(List.of("assign " + moved), List.copyOf(second.events));

      ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
          .get(30, TimeUnit.SECONDS).get(group);
      assertEquals(GroupState.STABLE, d.groupState());
      assertEquals("cooperative-sticky", d.partitionAssignor());
      Map<String, Set<Integer>> described = new TreeMap<>();
      for (MemberDescription md : d.members()) described.put(md.clientId(), partitions(md.assignment().topicPartitions()));
      assertEquals(Map.of("java-coop-1", first.assignment.get(), "java-coop-2", moved), described);
    } finally {
      members.forEach(m -> m.stop.set(true));
      for (var m : members) m.thread.join(30_000);
    }
    for (var m : members) {
      assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(m.finalCommit, m.clientId + " did not commit and close");
    }
    assertEquals(uniform(40), committedOffsets(group));
  }

  /** Static members (KIP-345): one restarts with its group.instance.id and gets its partitions back
   * without a rebalance (the other member sees no revoke/assign). The 30 s session timeout
   * only has to outlast the restart. */
  @Test
  void staticMemberRestartsWithoutRebalance() throws Exception {
    String topic = "java-static-" + UUID.randomUUID().toString().substring(0, 8);
    String group = "java-grp-" + topic;
    createTopic(topic);
    Set<String> seen = ConcurrentHashMap.newKeySet();
    Map<String, Object> stat1 = Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "static-1",
        ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30000);
    Map<String, Object> stat2 = Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "static-2",
        ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30000);
    Member one = new Member("java-static-1", topic, group, seen, stat1);
    Member two = new Member("java-static-2", topic, group, seen, stat2);
    Member again = new Member("java-static-2", topic, group, seen, stat2);
    List<Member> all = List.of(one, two, again);
    one.thread.start();
    two.thread.start();
    try {
      Set<String> produced = new TreeSet<>(produce(topic, 0, PARTITIONS * 20));
      BooleanSupplier split = () -> seen.containsAll(produced) && one.assignment.get().size() == 2
          && two.assignment.get().size() == 2 && positionsOf(List.of(one, two)).equals(uniform(20));
      boolean ok = waitUntil(() -> split.getAsBoolean() || all.stream().anyMatch(m -> m.error.get() != null));
      for (var m : all) assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(ok, List.of(one, two).stream().map(m -> m.clientId + "=" + m.assignment.get() + " "
          + m.positions.get() + " " + m.events).toList().toString());
      List<String> oneEvents = List.copyOf(one.events);
      Set<Integer> twoOwned = two.assignment.get();

      // Closing a static member does not leave the group: it is still described.
      two.stop.set(true);
      two.thread.join(30_000);
      assertNull(two.error.get());
      assertTrue(two.finalCommit);
      ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
          .get(30, TimeUnit.SECONDS).get(group);
      Map<String, Set<Integer>> described = new TreeMap<>();
      for (MemberDescription md : d.members()) {
        described.put(md.groupInstanceId().orElse("-"), partitions(md.assignment().topicPartitions()));
      }
      assertEquals(Map.of("static-1", one.assignment.get(), "static-2", twoOwned), described);

      // Restarted with the same instance id: same partitions, resumes at the commits, no rebalance.
      again.thread.start();
      produced.addAll(produce(topic, PARTITIONS * 20, PARTITIONS * 20));
      ok = waitUntil(() -> all.stream().anyMatch(m -> m.error.get() != null) || (seen.containsAll(produced)
          && positionsOf(List.of(one, again)).equals(uniform(40))));
      for (var m : all) assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(ok, List.of(one, again).stream().map(m -> m.clientId + "=" + m.assignment.get() + " "
          + m.positions.get() + " " + m.events).toList().toString());
      assertEquals(twoOwned, again.assignment.get());
      assertEquals(List.of("assign " + twoOwned), List.copyOf(again.events));
      assertEquals(oneEvents, List.copyOf(one.events), "the other member was rebalanced");
      d = admin.describeConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS).get(group);
      assertEquals(GroupState.STABLE, d.groupState());
      assertEquals(2, d.members().size());
    } finally {
      all.forEach(m -> m.stop.set(true));
      for (var m : all) if (m.thread.isAlive()) m.thread.join(30_000);
    }
    assertNull(again.error.get());
    assertEquals(uniform(40), committedOffsets(group));
  }

  /** A rebalance waits for a member that is busy between polls (up to its
   * max.poll.interval.ms), longer than the session timeout, as its heartbeats go on:
   * it keeps its member id. A new consumer of the group later resumes at the commits,
   * whose leader epochs and metadata the broker returns as committed. */
  @Test
  void rebalanceWaitsForSlowMemberThenNewConsumerResumes() throws Exception {
    String topic = "java-slow-" + UUID.randomUUID().toString().substring(0, 8);
    String group = "java-grp-" + topic;
    createTopic(topic);
    Set<String> seen = ConcurrentHashMap.newKeySet();
    Member slow = new Member("java-slow-1", topic, group, seen);
    Member joiner = new Member("java-slow-2", topic, group, seen);
    List<Member> members = List.of(slow, joiner);
    slow.thread.start();
    Set<String> produced;
    try {
      produced = new TreeSet<>(produce(topic, 0, PARTITIONS * 10));
      boolean alone = waitUntil(() -> slow.error.get() != null || (seen.containsAll(produced)
          && positionsOf(List.of(slow)).equals(uniform(10))));
      assertNull(slow.error.get());
      assertTrue(alone, slow.assignment.get() + " " + slow.positions.get());
      String id = slow.memberId.get();
      assertFalse(id.isEmpty());

      slow.stallMs = 9000;   // > session.timeout.ms (6 s): only heartbeats keep it in the group
      Thread.sleep(500);
      joiner.thread.start();
      produced.addAll(produce(topic, PARTITIONS * 10, PARTITIONS * 10));
      boolean split = waitUntil(() -> members.stream().anyMatch(m -> m.error.get() != null)
          || (seen.containsAll(produced) && slow.assignment.get().size() == 2
              && joiner.assignment.get().size() == 2 && positionsOf(members).equals(uniform(20))));
      for (var m : members) assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(split, members.stream().map(m -> m.clientId + "=" + m.assignment.get() + " "
          + m.positions.get() + " " + m.events).toList().toString());
      assertEquals(id, slow.memberId.get(), "the slow member was dropped and rejoined as a new member");
    } finally {
      members.forEach(m -> m.stop.set(true));
      for (var m : members) if (m.thread.isAlive()) m.thread.join(30_000);
    }
    for (var m : members) assertTrue(m.finalCommit, m.clientId + " did not commit and close");
    var offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
    assertEquals(uniform(20), committedOffsets(group));
    for (var om : offsets.values()) assertTrue(om.leaderEpoch().isPresent(), "no leader epoch: " + offsets);

    // A new consumer of the group resumes at the commits; commits with metadata read back.
    Set<String> more = produce(topic, PARTITIONS * 20, PARTITIONS * 5);
    Map<String, Object> cc = Map.of(
        ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        ConsumerConfig.GROUP_ID_CONFIG, group,
        ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic",
        ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000,
        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
        ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    Set<String> got = new TreeSet<>();
    try (var consumer = new KafkaConsumer<>(cc, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      consumer.subscribe(List.of(topic));
      long deadline = System.nanoTime() + DEADLINE.toNanos();
      while (got.size() < more.size() && System.nanoTime() < deadline) {
        for (var r : consumer.poll(Duration.ofMillis(200))) got.add(r.partition() + "@" + r.offset());
      }
      assertEquals(more, got, "did not resume exactly at the committed offsets");
      Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
      for (var tp : consumer.assignment()) commit.put(tp, new OffsetAndMetadata(consumer.position(tp), "done-" + tp.partition()));
      assertEquals(PARTITIONS, commit.size());
      consumer.commitSync(commit);
      var back = consumer.committed(commit.keySet());
      for (var tp : commit.keySet()) {
        assertEquals(25, back.get(tp).offset());
        assertEquals("done-" + tp.partition(), back.get(tp).metadata());
      }
    }
    assertEquals(uniform(25), committedOffsets(group));
  }

  /** Groups with offsets only (no members), many at once: the admin client batches
   * FindCoordinator (v4+), OffsetFetch (v8+), DescribeGroups and DeleteGroups per coordinator. */
  @Test
  void manyGroupsInBatchedAdminCalls() throws Exception {
    String topic = "java-many-" + UUID.randomUUID().toString().substring(0, 8);
    createTopic(topic);
    produce(topic, 0, PARTITIONS * 10);
    List<String> groups = IntStream.range(0, 12).mapToObj(i -> "java-many-" + i + "-" + topic).toList();
    for (int i = 0; i < groups.size(); i++) {
      Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
      for (int p = 0; p < PARTITIONS; p++) offsets.put(new TopicPartition(topic, p), new OffsetAndMetadata(i % 10 + p % 2));
      admin.alterConsumerGroupOffsets(groups.get(i), offsets).all().get(30, TimeUnit.SECONDS);
    }
    assertTrue(groupIds().containsAll(groups), "listConsumerGroups misses some of " + groups);

    Map<String, ListConsumerGroupOffsetsSpec> specs = new HashMap<>();
    for (String g : groups) specs.put(g, new ListConsumerGroupOffsetsSpec());
    var all = admin.listConsumerGroupOffsets(specs).all().get(30, TimeUnit.SECONDS);
    for (int i = 0; i < groups.size(); i++) {
      Map<Integer, Long> want = new TreeMap<>(), got = new TreeMap<>();
      for (int p = 0; p < PARTITIONS; p++) want.put(p, (long) (i % 10 + p % 2));
      all.get(groups.get(i)).forEach((tp, om) -> got.put(tp.partition(), om.offset()));
      assertEquals(want, got, groups.get(i));
    }
    // Only some partitions of one group.
    var tp1 = new TopicPartition(topic, 1);
    var one = admin.listConsumerGroupOffsets(Map.of(groups.get(3),
        new ListConsumerGroupOffsetsSpec().topicPartitions(List.of(tp1)))).partitionsToOffsetAndMetadata(groups.get(3))
        .get(30, TimeUnit.SECONDS);
    assertEquals(Set.of(tp1), one.keySet());
    assertEquals(4L, one.get(tp1).offset());

    var described = admin.describeConsumerGroups(groups).all().get(30, TimeUnit.SECONDS);
    assertEquals(new TreeSet<>(groups), new TreeSet<>(described.keySet()));
    for (var d : described.values()) {
      assertEquals(GroupState.EMPTY, d.groupState(), d.groupId());
      assertTrue(d.members().isEmpty());
    }

    admin.deleteConsumerGroups(groups).all().get(30, TimeUnit.SECONDS);
    Set<String> left = new TreeSet<>(groupIds());
    left.retainAll(groups);
    assertEquals(Set.of(), left);
  }

  /** assign() without a subscription: commits with no generation are stored while the
   * group has no members, refused while it has some; a subscribed member resumes at them. */
  @Test
  void assignedConsumerCommitsWithoutMembership() throws Exception {
    String topic = "java-assign-" + UUID.randomUUID().toString().substring(0, 8);
    String group = "java-grp-" + topic;
    createTopic(topic);
    produce(topic, 0, PARTITIONS * 10);
    Map<String, Object> cc = Map.of(
        ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        ConsumerConfig.GROUP_ID_CONFIG, group,
        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
        ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    List<TopicPartition> tps = IntStream.range(0, PARTITIONS).mapToObj(p -> new TopicPartition(topic, p)).toList();
    try (var consumer = new KafkaConsumer<>(cc, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      consumer.assign(tps);
      int got = 0;
      long deadline = System.nanoTime() + DEADLINE.toNanos();
      while (got < PARTITIONS * 6 && System.nanoTime() < deadline) {
        for (var r : consumer.poll(Duration.ofMillis(200))) if (r.offset() < 6) got++;
      }
      Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
      for (var tp : tps) commit.put(tp, new OffsetAndMetadata(6));
      consumer.commitSync(commit);
      assertEquals(uniform(6), committedOffsets(group));
      assertEquals(GroupState.EMPTY, admin.describeConsumerGroups(List.of(group)).all()
          .get(30, TimeUnit.SECONDS).get(group).groupState());
    }

    Set<String> seen = ConcurrentHashMap.newKeySet();
    Member member = new Member("java-assign-member", topic, group, seen);
    member.thread.start();
    try {
      boolean ok = waitUntil(() -> member.error.get() != null || positionsOf(List.of(member)).equals(uniform(10)));
      assertNull(member.error.get());
      assertTrue(ok, member.assignment.get() + " " + member.positions.get());
      Set<String> want = new TreeSet<>();
      for (int p = 0; p < PARTITIONS; p++) for (int o = 6; o < 10; o++) want.add(p + "@" + o);
      assertEquals(want, new TreeSet<>(seen), "the member did not resume at the assign()-made commits");

      // While the group has a member, a commit without a generation is refused.
      try (var outsider = new KafkaConsumer<>(cc, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
        outsider.assign(tps);
        assertThrows(org.apache.kafka.common.KafkaException.class,
            () -> outsider.commitSync(Map.of(tps.get(0), new OffsetAndMetadata(1))));
      }
      assertEquals(10L, committedOffsets(group).get(0));
    } finally {
      member.stop.set(true);
      member.thread.join(30_000);
    }
    assertTrue(member.finalCommit);
    assertEquals(uniform(10), committedOffsets(group));
  }

  @Test
  void subscribeConsumeCommitDescribeAndDeleteGroup() throws Exception {
    String topic = "java-group-" + UUID.randomUUID().toString().substring(0, 8);
    String group = "java-grp-" + topic;
    createTopic(topic);

    Set<String> seen = ConcurrentHashMap.newKeySet();
    List<Member> members = List.of(new Member("java-member-1", topic, group, seen),
        new Member("java-member-2", topic, group, seen));
    members.forEach(m -> m.thread.start());
    Map<Integer, Long> ends = IntStream.range(0, PARTITIONS).boxed()
        .collect(Collectors.toMap(p -> p, p -> (long) PER_PARTITION, (a, b) -> a, TreeMap::new));
    try {
      // Produced while the members join, get their partitions and consume.
      Set<String> produced = produce(topic, 0, PARTITIONS * PER_PARTITION);
      Set<String> expected = new TreeSet<>();
      for (int p = 0; p < PARTITIONS; p++) for (int o = 0; o < PER_PARTITION; o++) expected.add(p + "@" + o);
      assertEquals(expected, produced);

      BooleanSupplier done = () -> {
        if (!seen.containsAll(produced)) return false;
        Set<Integer> a = members.get(0).assignment.get(), b = members.get(1).assignment.get();
        Set<Integer> union = new TreeSet<>(a);
        union.addAll(b);
        Map<Integer, Long> pos = new TreeMap<>(members.get(0).positions.get());
        pos.putAll(members.get(1).positions.get());
        return !a.isEmpty() && !b.isEmpty() && Collections.disjoint(a, b)
            && union.size() == PARTITIONS && pos.equals(ends);
      };
      boolean ok = waitUntil(() -> done.getAsBoolean() || members.stream().anyMatch(m -> m.error.get() != null));
      for (var m : members) assertNull(m.error.get(), m.clientId + " failed");
      Set<String> missing = new TreeSet<>(produced);
      missing.removeAll(seen);
      assertEquals(Set.of(), missing, "records never consumed");
      assertTrue(ok, "members never split the partitions / caught up: "
          + members.stream().map(m -> m.clientId + "=" + m.assignment.get() + " " + m.positions.get()).toList());

      // Described while both run: STABLE, a classic consumer group with both members and their assignments.
      ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
          .get(30, TimeUnit.SECONDS).get(group);
      assertEquals(group, d.groupId());
      assertEquals(GroupState.STABLE, d.groupState());
      assertEquals(GroupType.CLASSIC, d.type());
      assertFalse(d.isSimpleConsumerGroup());
      assertEquals("range", d.partitionAssignor());   // the first of the default [range, cooperative-sticky]
      assertEquals(1, d.coordinator().id());
      Map<String, Set<Integer>> described = new TreeMap<>();
      for (MemberDescription md : d.members()) described.put(md.clientId(), partitions(md.assignment().topicPartitions()));
      Map<String, Set<Integer>> actual = new TreeMap<>();
      for (var m : members) actual.put(m.clientId, m.assignment.get());
      assertEquals(actual, described);
      assertEquals(2, d.members().stream().map(MemberDescription::consumerId).distinct().count());

      var listed = listing(group);
      assertTrue(listed.isPresent(), "listConsumerGroups misses " + group);
      assertEquals(Optional.of(GroupState.STABLE), listed.get().groupState());
      assertFalse(listed.get().isSimpleConsumerGroup());

      // A group with members cannot be deleted, nor the offsets of a topic it subscribes to.
      var e = assertThrows(java.util.concurrent.ExecutionException.class,
          () -> admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS));
      assertInstanceOf(GroupNotEmptyException.class, e.getCause());
      e = assertThrows(java.util.concurrent.ExecutionException.class,
          () -> admin.deleteConsumerGroupOffsets(group, Set.of(new TopicPartition(topic, 0))).all()
              .get(30, TimeUnit.SECONDS));
      assertInstanceOf(GroupSubscribedToTopicException.class, e.getCause());
    } finally {
      members.forEach(m -> m.stop.set(true));
      for (var m : members) m.thread.join(30_000);
    }
    for (var m : members) {
      assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(m.finalCommit, m.clientId + " did not commit and close");
    }
    Set<Integer> union = new TreeSet<>(members.get(0).finalAssignment);
    union.addAll(members.get(1).finalAssignment);
    assertEquals(PARTITIONS, union.size());

    assertEquals(ends, committedOffsets(group));

    // Both members left: EMPTY, then deleted.
    ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
        .get(30, TimeUnit.SECONDS).get(group);
    assertEquals(GroupState.EMPTY, d.groupState());
    assertEquals(List.of(), List.copyOf(d.members()));
    assertEquals(Optional.of(GroupState.EMPTY), listing(group).map(g -> g.groupState().orElse(null)));

    // Offsets of an empty group: altered (OffsetCommit with no generation), then one deleted (OffsetDelete).
    var tp0 = new TopicPartition(topic, 0);
    admin.alterConsumerGroupOffsets(group, Map.of(tp0, new OffsetAndMetadata(10, "rewound")))
        .all().get(30, TimeUnit.SECONDS);
    var rewound = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
    assertEquals(new OffsetAndMetadata(10, Optional.empty(), "rewound").offset(), rewound.get(tp0).offset());
    assertEquals("rewound", rewound.get(tp0).metadata());
    admin.deleteConsumerGroupOffsets(group, Set.of(tp0)).all().get(30, TimeUnit.SECONDS);
    var afterDelete = new TreeMap<>(ends);
    afterDelete.remove(0);
    assertEquals(afterDelete, committedOffsets(group));

    admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS);
    assertFalse(groupIds().contains(group), "deleted group still listed");
    assertEquals(Map.of(), committedOffsets(group));
    // A deleted group is unknown to describe and to delete.
    var e = assertThrows(java.util.concurrent.ExecutionException.class,
        () -> admin.describeConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS));
    assertInstanceOf(GroupIdNotFoundException.class, e.getCause());
    e = assertThrows(java.util.concurrent.ExecutionException.class,
        () -> admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS));
    assertInstanceOf(GroupIdNotFoundException.class, e.getCause());
  }

  /** KIP-848 (group.protocol=consumer): the broker assigns; members split the partitions,
   *  consume everything, commit by member epoch, and the admin sees a CONSUMER group. */
  @Test
  void consumerProtocolGroupConsumesAndCommits() throws Exception {
    String topic = "java-848-" + UUID.randomUUID().toString().substring(0, 8);
    String group = "java-grp-" + topic;
    createTopic(topic);
    Set<String> seen = ConcurrentHashMap.newKeySet();
    Map<String, Object> kip848 = Map.of(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
    List<Member> members = List.of(new Member("java-848-1", topic, group, seen, kip848),
        new Member("java-848-2", topic, group, seen, kip848));
    members.forEach(m -> m.thread.start());
    Map<Integer, Long> ends = uniform(PER_PARTITION);
    try {
      Set<String> produced = produce(topic, 0, PARTITIONS * PER_PARTITION);
      BooleanSupplier done = () -> {
        if (!seen.containsAll(produced)) return false;
        Set<Integer> a = members.get(0).assignment.get(), b = members.get(1).assignment.get();
        Set<Integer> union = new TreeSet<>(a);
        union.addAll(b);
        Map<Integer, Long> pos = new TreeMap<>(members.get(0).positions.get());
        pos.putAll(members.get(1).positions.get());
        return !a.isEmpty() && !b.isEmpty() && Collections.disjoint(a, b)
            && union.size() == PARTITIONS && pos.equals(ends);
      };
      boolean ok = waitUntil(() -> done.getAsBoolean() || members.stream().anyMatch(m -> m.error.get() != null));
      for (var m : members) assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(ok, "members never split the partitions / caught up: "
          + members.stream().map(m -> m.clientId + "=" + m.assignment.get() + " " + m.positions.get()).toList());

      ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
          .get(30, TimeUnit.SECONDS).get(group);
      assertEquals(GroupType.CONSUMER, d.type());
      assertEquals(GroupState.STABLE, d.groupState());
      assertEquals(2, d.members().size());
    } finally {
      members.forEach(m -> m.stop.set(true));
      for (var m : members) m.thread.join(30_000);
    }
    for (var m : members) {
      assertNull(m.error.get(), m.clientId + " failed");
      assertTrue(m.finalCommit, m.clientId + " did not commit and close");
    }
    assertEquals(ends, committedOffsets(group));
  }
}
