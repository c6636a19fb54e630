"""The quick subset of the compatibility matrix (compat-tests/), inside `make test`.

Every installed client library (kafka-python, aiokafka, confluent-kafka, and kcat and kafkajs
when they could be installed) runs the core features against one broker subprocess. A feature
the broker doesn't serve yet, or a client that isn't installed, is skipped with the reason; a
feature that is served must pass. `make compat` runs the full matrix.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat-tests"))

import harness  # noqa: E402

pytestmark = pytest.mark.timeout(900)

CLIENTS = harness.discover_clients()
FEATURES = harness.select_features(core_only=True)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> harness.Matrix:
    return harness.run_matrix(CLIENTS, FEATURES, jobs=3, log_dir=tmp_path_factory.mktemp("compat"))


@pytest.mark.parametrize("feature", [f.name for f in FEATURES])
@pytest.mark.parametrize("client", [c.name for c in CLIENTS])
def test_compat(matrix: harness.Matrix, client: str, feature: str) -> None:
    cell = matrix.cells[(client, feature)]
    if cell.status in (harness.NOT_BUILT, harness.UNAVAILABLE, harness.NA):
        pytest.skip(f"{cell.status}: {cell.detail}")
    assert cell.status == harness.PASS, f"{client} {feature}: {cell.detail}\n{matrix.broker_note}"
