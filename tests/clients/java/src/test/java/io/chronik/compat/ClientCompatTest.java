package io.chronik.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The Apache Kafka Java client against the broker named by CHRONIK_BOOTSTRAP
 * (system property or environment variable). Consumers use assign() + seek()
 * with no group.id, so no group coordinator is needed.
 */
class ClientCompatTest {
  static final int N = 200;
  static final Duration TIMEOUT = Duration.ofSeconds(30);
  static String bootstrap;
  static Admin admin;

  @BeforeAll
  static void connect() {
    bootstrap = System.getProperty("CHRONIK_BOOTSTRAP", System.getenv("CHRONIK_BOOTSTRAP"));
    assertNotNull(bootstrap, "set CHRONIK_BOOTSTRAP=host:port");
    admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        AdminClientConfig.CLIENT_ID_CONFIG, "compat-java-admin"));
  }

  @AfterAll
  static void close() {
    if (admin != null) admin.close(TIMEOUT);
  }

  static String topic(String what) {
    return "java-" + what + "-" + UUID.randomUUID().toString().substring(0, 8);
  }

  static void create(String name, int partitions, Map<String, String> configs) throws Exception {
    admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
        .all().get(30, TimeUnit.SECONDS);
    // Metadata is eventually consistent (Kafka answers CreateTopics before its cache has the topic).
    assertEquals(partitions, eventually(() -> partitionCount(name), n -> n == partitions));
  }

  static int partitionCount(String t) throws Exception {
    try {
      return admin.describeTopics(List.of(t)).allTopicNames().get().get(t).partitions().size();
    } catch (ExecutionException e) {
      return -1;
    }
  }

  /** Polls get() until ok holds or TIMEOUT passes; returns the last value. */
  static <T> T eventually(Callable<T> get, Predicate<T> ok) throws Exception {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    T v = get.call();
    while (!ok.test(v) && System.nanoTime() < deadline) {
      Thread.sleep(100);
      v = get.call();
    }
    return v;
  }

  static byte[] bytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  static byte[] value(int i) {
    byte[] v = new byte[i % 50 * 7 + 1];   // varied sizes, every byte value, compressible pattern
    for (int j = 0; j < v.length; j++) v[j] = (byte) (i * 31 + j);
    return v;
  }

  @ParameterizedTest
  @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
  void produceDefaultsThenAssignAndSeek(String codec) throws Exception {
    String t = topic("rt-" + codec);
    create(t, 1, Map.of());
    Map<String, Object> pc = new HashMap<>(Map.of(
        ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
        ProducerConfig.LINGER_MS_CONFIG, 5));
    List<RecordMetadata> metas = new ArrayList<>();
    // Defaults otherwise: enable.idempotence=true, acks=all (InitProducerId + sequenced batches).
    try (var producer = new KafkaProducer<>(pc, new ByteArraySerializer(), new ByteArraySerializer())) {
      List<Future<RecordMetadata>> futures = new ArrayList<>();
      for (int i = 0; i < N; i++) {
        var rec = new ProducerRecord<>(t, 0, bytes("k" + i), value(i));
        rec.headers().add("idx", bytes(Integer.toString(i))).add("empty", new byte[0]);
        futures.add(producer.send(rec));
      }
      producer.flush();
      for (var f : futures) metas.add(f.get(30, TimeUnit.SECONDS));
    }
    for (int i = 0; i < N; i++) {
      assertEquals(0, metas.get(i).partition());
      assertEquals(i, metas.get(i).offset(), "offset of record " + i);
    }

    List<ConsumerRecord<byte[], byte[]>> got = consume(t, 0, N);
    assertEquals(N, got.size());
    for (int i = 0; i < N; i++) {
      var r = got.get(i);
      assertEquals(i, r.offset());
      assertArrayEquals(bytes("k" + i), r.key());
      assertArrayEquals(value(i), r.value(), "value of record " + i);
      Header[] hs = r.headers().toArray();
      assertEquals(2, hs.length);
      assertEquals("idx", hs[0].key());
      assertArrayEquals(bytes(Integer.toString(i)), hs[0].value());
      assertEquals("empty", hs[1].key());
      assertArrayEquals(new byte[0], hs[1].value());
    }

    // Seek into the middle of a (possibly compressed) batch.
    var tail = consume(t, N - 3, 3);
    assertEquals(List.of((long) N - 3, (long) N - 2, (long) N - 1),
        tail.stream().map(ConsumerRecord::offset).toList());
  }

  static List<ConsumerRecord<byte[], byte[]>> consume(String t, long offset, int n) {
    Map<String, Object> cc = Map.of(
        ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
    try (var consumer = new KafkaConsumer<>(cc, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      var tp = new TopicPartition(t, 0);
      consumer.assign(List.of(tp));
      consumer.seek(tp, offset);
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (got.size() < n && System.nanoTime() < deadline) {
        consumer.poll(Duration.ofMillis(500)).forEach(got::add);
      }
      assertEquals(offset + got.size(), consumer.position(tp));
    }
    return got;
  }

  @Test
  void adminCreateDescribeDeleteTopics() throws Exception {
    String t = topic("admin");
    create(t, 3, Map.of());
    assertTrue(admin.listTopics().names().get().contains(t));
    TopicDescription d = admin.describeTopics(List.of(t)).allTopicNames().get().get(t);
    assertEquals(3, d.partitions().size());
    for (var p : d.partitions()) {
      assertEquals(1, p.leader().id());
      assertEquals(List.of(1), p.replicas().stream().map(Node::id).toList());
      assertEquals(List.of(1), p.isr().stream().map(Node::id).toList());
    }

    admin.createPartitions(Map.of(t, NewPartitions.increaseTo(4))).all().get();
    assertEquals(4, eventually(() -> partitionCount(t), n -> n == 4));

    admin.deleteTopics(List.of(t)).all().get();
    assertFalse(eventually(() -> admin.listTopics().names().get().contains(t), in -> !in));
  }

  @Test
  void createExistingTopicFails() throws Exception {
    String t = topic("dup");
    create(t, 1, Map.of());
    var e = assertThrows(ExecutionException.class, () -> create(t, 1, Map.of()));
    assertInstanceOf(TopicExistsException.class, e.getCause());
  }

  @Test
  void describeAndAlterConfigs() throws Exception {
    String t = topic("cfg");
    create(t, 1, Map.of("retention.ms", "3600000"));
    var res = new ConfigResource(ConfigResource.Type.TOPIC, t);
    Config c = admin.describeConfigs(List.of(res)).all().get().get(res);
    assertEquals("3600000", c.get("retention.ms").value());
    assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source());
    assertEquals("delete", c.get("cleanup.policy").value());

    var op = new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET);
    admin.incrementalAlterConfigs(Map.of(res, List.of(op))).all().get();
    c = admin.describeConfigs(List.of(res)).all().get().get(res);
    assertEquals("7200000", c.get("retention.ms").value());
  }

  @Test
  void describeCluster() throws Exception {
    DescribeClusterResult r = admin.describeCluster();
    assertNotNull(r.clusterId().get());
    assertFalse(r.clusterId().get().isEmpty());
    assertEquals(List.of(1), r.nodes().get().stream().map(Node::id).toList());
    assertEquals(1, r.nodes().get().iterator().next().id());
  }
}
