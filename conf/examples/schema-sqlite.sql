-- Tables for ocpp-to-sqlite.conf. Create them once: sqlite3 data/ocpp.db < conf/examples/schema-sqlite.sql
CREATE TABLE IF NOT EXISTS ocpp_transactions (
    clientid      TEXT NOT NULL,
    unique_id     TEXT NOT NULL,      -- the UniqueId of the charge point's CALL
    event         TEXT NOT NULL,      -- StartTransaction / StopTransaction (1.6), Started / Updated / Ended (2.0.1)
    connector_id  INTEGER,
    transaction_id TEXT,
    id_tag        TEXT,
    meter_wh      REAL,
    at            TEXT
);
CREATE TABLE IF NOT EXISTS ocpp_meter_samples (
    clientid      TEXT NOT NULL,
    unique_id     TEXT NOT NULL,
    connector_id  INTEGER,
    transaction_id TEXT,
    sampled_at    TEXT,
    measurand     TEXT,
    value         REAL,
    unit          TEXT
);
