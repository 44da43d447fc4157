from __future__ import annotations

import pytest

from tests.servers import Mosquitto


@pytest.fixture
def mosquitto():
    broker = Mosquitto()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def postgres():
    from tests.servers import Postgres

    server = Postgres()
    server.start()
    yield server
    server.cleanup()
