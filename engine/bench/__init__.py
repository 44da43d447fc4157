"""`ocpp-gateway bench`: the performance scenarios of shared/spec/performance.md."""
