"""Session fixture: a broker for the client-compatibility tests.

With CHRONIK_BOOTSTRAP=host:port set, the tests use that running broker
(Chronik or Apache Kafka) and start nothing. Otherwise they start the Chronik
binary ($CHRONIK_BIN, else $CARGO_TARGET_DIR/debug/chronik, else
<repo>/target/debug/chronik) in a temporary data dir on free loopback ports;
with CHRONIK_BROKER_LOG=path set, the broker's log is copied there at the end.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = float(os.environ.get("CHRONIK_START_TIMEOUT", "90"))


def chronik_bin():
    if os.environ.get("CHRONIK_BIN"):
        return Path(os.environ["CHRONIK_BIN"])
    target = os.environ.get("CARGO_TARGET_DIR") or REPO / "target"
    return Path(target) / "debug" / "chronik"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(http_port, kafka_port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1) as r:
            if r.status != 200:
                return False
        socket.create_connection(("127.0.0.1", kafka_port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def bootstrap():
    if os.environ.get("CHRONIK_BOOTSTRAP"):
        yield os.environ["CHRONIK_BOOTSTRAP"]
        return
    binary = chronik_bin()
    if not binary.is_file():
        pytest.fail(f"broker binary not found: {binary} (build it, or set CHRONIK_BIN / CHRONIK_BOOTSTRAP)")
    kafka, http, rpc = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="chronik-pytest-") as tmp:
        log_path = Path(tmp) / "broker.log"
        addr = f"127.0.0.1:{kafka}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(binary), "start", "--node-id", "1", "--data-dir", str(Path(tmp) / "data"),
                 "--kafka-addr", addr, "--advertise-kafka-addr", addr,
                 "--http-addr", f"127.0.0.1:{http}", "--rpc-addr", f"127.0.0.1:{rpc}"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not ready(http, kafka):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chronik did not become ready (exit={proc.poll()}); log:\n"
                                + log_path.read_text(errors="replace")[-4000:])
                time.sleep(0.2)
            yield addr
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if os.environ.get("CHRONIK_BROKER_LOG"):
                shutil.copyfile(log_path, os.environ["CHRONIK_BROKER_LOG"])


@pytest.fixture
def topic_name(request):
    """A fresh topic name per test, readable in broker logs."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{test}-{uuid.uuid4().hex[:8]}"
