-- specgate fleet audit, migration 1: one table of every node's records, and the shipping cursor.
--
-- Applied by specgate on first connect, in one transaction, under an advisory lock so that a
-- fleet starting at once migrates once. The tables are created in the first schema of the
-- connection's search_path.

-- One row per audit record of every node, keyed by (node, seq). `line` is the record exactly
-- as the node wrote and hashed it: `specgate audit verify --postgres` recomputes each hash from
-- it. `record` is the same record as jsonb (key order and number formatting are jsonb's; a
-- U+0000 in a string becomes U+FFFD, which jsonb cannot store), and the typed columns are
-- taken from it for filtering.
--
-- Large fleets: partition by month. Create the table yourself before specgate first connects
-- (it only creates what is missing; migration 1 is then recorded as applied):
--
--   CREATE TABLE specgate_audit (
--       <the columns below, without the primary key>,
--       PRIMARY KEY (node, seq, ts)      -- a partitioned table's key includes its partition key
--   ) PARTITION BY RANGE (ts);
--   CREATE TABLE specgate_audit_2026_11 PARTITION OF specgate_audit
--       FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
--
-- (node, seq, ts) is as unique as (node, seq): a record's ts never changes, so a resent record
-- still conflicts. specgate inserts with a bare ON CONFLICT DO NOTHING, which works with either
-- key, and exactly-once does not rest on it alone: the cursor below advances in the same
-- transaction as the rows. Old months are then detached or dropped whole, and queries with
-- --since touch only the partitions they need. Create next month's partition ahead of time
-- (pg_partman or a cron job); an insert with no partition fails, and specgate retries it,
-- keeping the backlog on the node's disk, until the partition exists.
CREATE TABLE IF NOT EXISTS specgate_audit (
    node            text        NOT NULL,
    seq             bigint      NOT NULL,
    ts              timestamptz NOT NULL,
    outcome         text        NOT NULL,
    request_id      text,
    operation_id    text,
    client          text,
    resource_id     text,
    service         text,
    externalid      text,
    upstream_status integer,
    hash            text        NOT NULL,
    line            text        NOT NULL,
    record          jsonb       NOT NULL,
    shipped_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, seq)
);

-- What `specgate audit query` filters on, and what auditors ask: by time, by request, by the
-- upstream's id of the created resource, by the app's external id, by service, client,
-- operation and outcome within a time range.
CREATE INDEX IF NOT EXISTS specgate_audit_ts ON specgate_audit (ts);
CREATE INDEX IF NOT EXISTS specgate_audit_request_id ON specgate_audit (request_id);
CREATE INDEX IF NOT EXISTS specgate_audit_resource_id ON specgate_audit (resource_id);
CREATE INDEX IF NOT EXISTS specgate_audit_externalid ON specgate_audit (externalid);
CREATE INDEX IF NOT EXISTS specgate_audit_service_ts ON specgate_audit (service, ts);
CREATE INDEX IF NOT EXISTS specgate_audit_client_ts ON specgate_audit (client, ts);
CREATE INDEX IF NOT EXISTS specgate_audit_operation_ts ON specgate_audit (operation_id, ts);
CREATE INDEX IF NOT EXISTS specgate_audit_outcome_ts ON specgate_audit (outcome, ts);

-- The last record of each node in specgate_audit: (seq, hash). It advances in the same
-- transaction as the rows it covers, only from the value the shipper last read (so a second
-- sidecar shipping under the same node name is caught, not interleaved), and it is where a
-- restarted shipper resumes.
CREATE TABLE IF NOT EXISTS specgate_audit_cursor (
    node       text        PRIMARY KEY,
    seq        bigint      NOT NULL,
    hash       text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
