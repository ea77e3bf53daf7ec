"""Session fixture: a broker for the client-compatibility tests.

With CHRONIK_BOOTSTRAP=host:port set, the tests use that running broker
(Chronik or Apache Kafka) and start nothing. Otherwise they start the Chronik
binary ($CHRONIK_BIN, else $CARGO_TARGET_DIR/debug/chronik, else
<repo>/target/debug/chronik) in a temporary data dir on free loopback ports;
with CHRONIK_BROKER_LOG=path set, the broker's log is copied there at the end
(path.own for the last test's own_broker).
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


class Broker:
    """A Chronik process on fixed loopback ports and a data dir, so that it can be
    stopped and started again on the same data (its log accumulates in log_path)."""

    def __init__(self, data_dir, log_path):
        self.data_dir, self.log_path = Path(data_dir), Path(log_path)
        self.kafka, self.http, self.rpc = free_port(), free_port(), free_port()
        self.addr = f"127.0.0.1:{self.kafka}"
        self.proc = None

    def start(self):
        binary = chronik_bin()
        if not binary.is_file():
            pytest.fail(f"broker binary not found: {binary} (build it, or set CHRONIK_BIN / CHRONIK_BOOTSTRAP)")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), "start", "--node-id", "1", "--data-dir", str(self.data_dir),
                 "--kafka-addr", self.addr, "--advertise-kafka-addr", self.addr,
                 "--http-addr", f"127.0.0.1:{self.http}", "--rpc-addr", f"127.0.0.1:{self.rpc}"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready(self.http, self.kafka):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chronik did not become ready (exit={self.proc.poll()}); log:\n"
                            + self.log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.2)
        return self.addr

    def stop(self):
        """SIGTERM (a clean shutdown), SIGKILL after 10 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def keep_log(log_path, name):
    if os.environ.get("CHRONIK_BROKER_LOG"):
        shutil.copyfile(log_path, os.environ["CHRONIK_BROKER_LOG"] + name)


@pytest.fixture(scope="session")
def bootstrap():
    if os.environ.get("CHRONIK_BOOTSTRAP"):
        yield os.environ["CHRONIK_BOOTSTRAP"]
        return
    with tempfile.TemporaryDirectory(prefix="chronik-pytest-") as tmp:
        broker = Broker(Path(tmp) / "data", Path(tmp) / "broker.log")
        try:
            yield broker.start()
        finally:
            broker.stop()
            keep_log(broker.log_path, "")


@pytest.fixture
def own_broker(tmp_path):
    """A broker of the test's own, which the test may stop and start again (not with
    CHRONIK_BOOTSTRAP: an external broker cannot be restarted from here)."""
    if os.environ.get("CHRONIK_BOOTSTRAP"):
        pytest.skip("needs to restart the broker")
    broker = Broker(tmp_path / "data", tmp_path / "broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        keep_log(broker.log_path, ".own")


@pytest.fixture
def topic_name(request):
    """A fresh topic name per test, readable in broker logs."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{test}-{uuid.uuid4().hex[:8]}"
