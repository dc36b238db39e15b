-- Registry database: the Eureka-compatible registry's state, shared by every replica of
-- the registry function. Idempotent DDL: applied by `task migrate` and the local runtime,
-- together with functions/shared/schema.sql.

-- One row per registered instance. `record` holds the instance as functions/registry/model.py
-- describes it (Instance.as_record); the columns beside it are what queries filter on, and
-- last_renewal_ms, which heartbeats move without rewriting the record.
CREATE TABLE IF NOT EXISTS instances (
    app               text    NOT NULL CHECK (app <> ''),
    instance_id       text    NOT NULL CHECK (instance_id <> ''),
    -- A Knative Service listed by registry-sync: no lease to expire; it goes when the service goes.
    managed           boolean NOT NULL DEFAULT false,
    status            text    NOT NULL CHECK (status IN ('UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN')),
    overridden_status text    NOT NULL CHECK (overridden_status IN ('UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN')),
    record            jsonb   NOT NULL,
    -- Epoch milliseconds, as Eureka's wire format carries times.
    last_renewal_ms   bigint  NOT NULL,
    -- last_renewal_ms + the lease duration the instance asked for; NULL for managed instances.
    expires_ms        bigint  CHECK ((expires_ms IS NULL) = managed),
    PRIMARY KEY (app, instance_id)
);
-- GET /eureka/instances/{id} looks an id up across applications.
CREATE INDEX IF NOT EXISTS instances_by_id ON instances (instance_id);
-- Eviction finds expired leases without reading the rest.
CREATE INDEX IF NOT EXISTS instances_expiry ON instances (expires_ms) WHERE NOT managed;

-- The registry's version (versions__delta): one more for every change. Every transaction
-- that changes the registry locks this row first, so changes get their versions in commit
-- order and no two writers can deadlock on instance rows taken in different orders.
CREATE TABLE IF NOT EXISTS registry_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint  NOT NULL
);
INSERT INTO registry_version (singleton, version) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- Recently changed instances, for GET /eureka/apps/delta: each registration, status change,
-- cancellation, eviction and Knative sync change, with the instance as it was after it
-- (its last state, for DELETED). Rows older than the delta retention are pruned.
CREATE TABLE IF NOT EXISTS changes (
    version     bigint  PRIMARY KEY,
    app         text    NOT NULL,
    instance_id text    NOT NULL,
    action      text    NOT NULL CHECK (action IN ('ADDED', 'MODIFIED', 'DELETED')),
    record      jsonb   NOT NULL,
    changed_ms  bigint  NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (changed_ms);
