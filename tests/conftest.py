from __future__ import annotations

import pytest

from tests.servers import Mosquitto


@pytest.fixture
def mosquitto():
    broker = Mosquitto()
    broker.start()
    yield broker
    broker.stop()
