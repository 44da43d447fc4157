"""`ocpp-gateway bench`: the performance scenarios B1..B7 of docs/benchmarks.md."""
