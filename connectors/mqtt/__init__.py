"""MQTT: the bridge between the bus and a broker, and the embedded broker."""

from connectors.mqtt.bridge import BridgeOptions, MqttBridge
from connectors.mqtt.embedded import EmbeddedBroker, EmbeddedBrokerError

__all__ = ["BridgeOptions", "EmbeddedBroker", "EmbeddedBrokerError", "MqttBridge"]
