"""The OCPP side: frames, schemas, sessions, listeners."""
