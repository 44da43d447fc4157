"""ocpp-gateway: an OCPP-J gateway with an SQL rules engine."""

__version__ = "0.1.0"
