#!/usr/bin/env python3
"""Time from SIGKILL of a partition leader to the first successful acks=all produce.

Starts three release nodes on 127.0.9.2-4, creates an RF=3 topic, produces one record
every 10 ms (each waited for), kills the partition leader, and reports how long after
the kill the first record sent after it was acknowledged. Repeats RUNS times.
    cargo build --release --bin chronik
    benches/scripts/failover.py [RUNS]
Needs confluent-kafka (pip install confluent-kafka).
"""
import os, shutil, signal, subprocess, sys, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BIN = os.environ.get("CHRONIK_BIN", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release/chronik"))
DATA = "/var/tmp/bench-failover"
PEERS = ",".join(f"{i}@127.0.9.{i + 1}:9093" for i in (1, 2, 3))
BOOT = ",".join(f"127.0.9.{i + 1}:9092" for i in (1, 2, 3))


def start(i):
    ip = f"127.0.9.{i + 1}"
    log = open(f"{DATA}/n{i}.log", "a")
    return subprocess.Popen([BIN, "start", "--node-id", str(i), "--data-dir", f"{DATA}/n{i}",
                             "--kafka-addr", f"{ip}:9092", "--rpc-addr", f"{ip}:9093",
                             "--http-addr", f"{ip}:9644", "--peers", PEERS], stderr=log, stdout=log)


def leader(admin, topic):
    md = admin.list_topics(topic, timeout=5)
    return md.topics[topic].partitions[0].leader


def run_once(topic, nodes):
    admin = AdminClient({"bootstrap.servers": BOOT})
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(10)
    time.sleep(2)
    p = Producer({"bootstrap.servers": BOOT, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 0, "topic.metadata.refresh.interval.ms": 200,
                  "retry.backoff.ms": 20, "retry.backoff.max.ms": 100})
    for _ in range(20):
        p.produce(topic, b"warm", partition=0)
        p.flush(5)
    victim = leader(admin, topic)
    nodes[victim].send_signal(signal.SIGKILL)
    nodes[victim].wait()
    killed = time.monotonic()
    acked = []
    while not acked:
        p.produce(topic, b"after", partition=0, on_delivery=lambda err, msg: err is None and acked.append(time.monotonic()))
        p.flush(0.01)
        p.poll(0)
        if time.monotonic() - killed > 60:
            raise SystemExit("no produce succeeded within 60 s")
    p.flush(30)
    nodes[victim] = start(victim)
    time.sleep(5)
    return acked[0] - killed


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    shutil.rmtree(DATA, ignore_errors=True)
    os.makedirs(DATA)
    nodes = {i: start(i) for i in (1, 2, 3)}
    try:
        time.sleep(3)
        times = [run_once(f"failover{r}", nodes) for r in range(runs)]
        for t in times:
            print(f"kill -> first acknowledged produce: {t * 1000:.0f} ms")
        times.sort()
        print(f"median {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms over {runs} runs")
    finally:
        for n in nodes.values():
            n.terminate()
            n.wait()


if __name__ == "__main__":
    main()
