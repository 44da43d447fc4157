"""Connectors: the resource model and each target built on it (MQTT, HTTP, SQL)."""
