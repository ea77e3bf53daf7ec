#!/usr/bin/env python3
"""Produces about GB gigabytes of log-like JSON records (1 KiB-ish, varied fields) to
TOPIC, uncompressed, so the store holds data with a realistic compression ratio.
Usage: json_records.py BOOTSTRAP TOPIC GB"""
import json
import random
import sys

from confluent_kafka import Producer

bootstrap, topic, gigabytes = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = random.Random(42)
words = ["checkout", "login", "search", "cart", "payment", "profile", "logout", "refund", "review", "ship"]
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1000000,
                     "compression.codec": "none", "queue.buffering.max.kbytes": 512000})
target, sent, i = int(gigabytes * (1 << 30)), 0, 0
while sent < target:
    record = {
        "ts": 1767225600000 + i * 7,
        "user": f"user-{rng.randrange(100000):06d}",
        "session": "%032x" % rng.getrandbits(128),
        "event": rng.choice(words),
        "path": "/" + "/".join(rng.choice(words) for _ in range(3)),
        "latency_ms": round(rng.expovariate(1 / 40), 3),
        "items": [{"sku": f"sku-{rng.randrange(5000)}", "qty": rng.randrange(1, 5),
                   "price": round(rng.uniform(1, 300), 2)} for _ in range(rng.randrange(1, 8))],
        "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
    }
    value = json.dumps(record).encode()
    while True:
        try:
            producer.produce(topic, value, key=record["user"].encode(), partition=i % 4)
            break
        except BufferError:
            producer.poll(0.05)
    sent += len(value)
    i += 1
    if i % 10000 == 0:
        producer.poll(0)
producer.flush(120)
print(f"produced {i} records, {sent} bytes", file=sys.stderr)
