-- Tables for ocpp-to-pgsql.conf: psql -d ocpp -f conf/examples/schema-pgsql.sql
CREATE TABLE IF NOT EXISTS ocpp_transactions (
    clientid       text NOT NULL,
    unique_id      text NOT NULL,
    event          text NOT NULL,
    connector_id   integer,
    transaction_id text,
    id_tag         text,
    meter_wh       numeric,
    at             timestamptz,
    PRIMARY KEY (clientid, unique_id, event)
);
CREATE TABLE IF NOT EXISTS ocpp_meter_samples (
    clientid       text NOT NULL,
    unique_id      text NOT NULL,
    connector_id   integer,
    transaction_id text,
    sampled_at     timestamptz,
    measurand      text,
    value          numeric,
    unit           text
);
CREATE INDEX IF NOT EXISTS ocpp_meter_samples_by_cp ON ocpp_meter_samples (clientid, sampled_at);
