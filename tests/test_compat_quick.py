"""The quick subset of the compatibility matrix (compat-tests/), inside `make test`.

Every installed client library (kafka-python, aiokafka, confluent-kafka, and kcat and kafkajs
when they could be installed) runs the core features against one broker subprocess. A feature
the broker doesn't serve yet, or a client that isn't installed, is skipped with the reason; a
feature that is served must pass. One failover cell (confluent-kafka through a SIGKILLed leader
of a three-broker cluster, ~10 s) runs too; `make compat` runs the full matrix.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat-tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat-tests" / "drivers"))

import harness  # noqa: E402
from common import CheckFailed, check_failover  # noqa: E402

pytestmark = pytest.mark.timeout(900)

CLIENTS = harness.discover_clients()
FEATURES = harness.select_features(core_only=True)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> harness.Matrix:
    return harness.run_matrix(CLIENTS, FEATURES, jobs=3, log_dir=tmp_path_factory.mktemp("compat"))


def _may_skip(cell) -> bool:
    """Only what can't exist here skips: a feature the client has no way to do (n/a), or, when
    not root, a client that could not be installed. As root (CI) `make test` installs every
    client, and every core feature is served, so `unavailable` or `not built` is a failure."""
    if cell.status == harness.NA:
        return True
    return cell.status == harness.UNAVAILABLE and os.geteuid() != 0


@pytest.mark.parametrize("feature", [f.name for f in FEATURES])
@pytest.mark.parametrize("client", [c.name for c in CLIENTS])
def test_compat(matrix: harness.Matrix, client: str, feature: str) -> None:
    cell = matrix.cells[(client, feature)]
    if _may_skip(cell):
        pytest.skip(f"{cell.status}: {cell.detail}")
    assert cell.status == harness.PASS, f"{client} {feature}: {cell.detail}\n{matrix.broker_note}"


def test_failover_confluent_kafka(tmp_path) -> None:
    """The failover column's driver for librdkafka, on the matrix's own cluster harness."""
    clients = harness.discover_clients(["confluent-kafka"])
    m = harness.run_matrix(clients, harness.select_features(["failover"]), log_dir=tmp_path)
    cell = m.cells[("confluent-kafka", "failover")]
    if _may_skip(cell):
        pytest.skip(f"{cell.status}: {cell.detail}")
    log = (tmp_path / "confluent-kafka.failover.log").read_text()[-2000:]
    assert cell.status == harness.PASS, f"{cell.detail}\n{m.broker_note}\n{log}"
    assert "SIGKILLed mid-stream" in cell.detail and "restarted and in sync" in cell.detail


# --- the failover check itself, on made-up reads ---------------------------------------------


def _reads(seqs: list[int]) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) for records read in this order, offsets as a log would have."""
    next_offset: dict[int, int] = {}
    out = []
    for s in seqs:
        p = s % 3
        out.append((p, next_offset.get(p, 0), str(s).encode()))
        next_offset[p] = next_offset.get(p, 0) + 1
    return out


def test_failover_check_accepts_every_record_once_in_order() -> None:
    detail = check_failover(set(range(30)), _reads(list(range(30))), 30, 1, 10)
    assert detail.startswith("30/30 acknowledged")
    # Unacknowledged records that made it into the log are allowed (their ack was lost).
    assert "2 unacknowledged" in check_failover(set(range(28)), _reads(list(range(30))), 30, 1, 0)


@pytest.mark.parametrize(
    ("reads", "complaint"),
    [
        (_reads(list(range(29))), "never read"),  # record 29 acknowledged, lost
        (_reads(list(range(30)) + [3]), "read twice"),  # a duplicate in the log
        (_reads([0, 1, 2, 6, 3, 4, 5] + list(range(7, 30))), "record 3 after 6"),  # reordered
        ([(1, 0, b"0")] + _reads(list(range(1, 30))), "record 0 on partition 1"),
        (_reads(list(range(30))) + [(0, 3, b"99")], "offset 3 after 9"),  # offsets go back
    ],
)
def test_failover_check_catches(reads, complaint) -> None:
    with pytest.raises(CheckFailed, match=complaint):
        check_failover(set(range(30)), reads, 30, 1, 0)
