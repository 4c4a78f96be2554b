-- The ledger's schema: plans (versioned, a reference table), accounts, per-pool period counters,
-- grants (buckets of credits), the append-only journal, debits, idempotency records, adjustments,
-- reservations and refunds, the event outbox with webhook endpoints and deliveries, and the
-- hourly usage rollup.
--
-- Every per-account table carries key_id and every primary key and unique constraint of such a
-- table includes it, so the schema can be distributed by key_id (Citus) later. No statement
-- touches two accounts.

CREATE TABLE plan_heads (
    id             text PRIMARY KEY,
    latest_version integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Plan versions are immutable: replacing a plan inserts a new version.
CREATE TABLE plans (
    id         text NOT NULL REFERENCES plan_heads (id),
    version    integer NOT NULL,
    name       text NOT NULL,
    interval   text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
    pools      jsonb NOT NULL,
    operations jsonb NOT NULL,
    ratelimits jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    -- Percentages of a period's allowance used that are announced as events.
    thresholds jsonb NOT NULL DEFAULT '[80, 100]'::jsonb,
    PRIMARY KEY (id, version)
);

CREATE TABLE accounts (
    key_id         text PRIMARY KEY,
    plan_id        text NOT NULL REFERENCES plan_heads (id),
    billing_anchor timestamptz NOT NULL,
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    external_id    text,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- Every Unkey key whose identity externalId equals external_id draws from this account.
    shared         boolean NOT NULL DEFAULT false,
    CHECK (period_start < period_end)
);

CREATE INDEX accounts_external_id ON accounts (external_id, key_id) WHERE external_id IS NOT NULL;
CREATE INDEX accounts_shared_external_id ON accounts (external_id, created_at)
    WHERE shared AND external_id IS NOT NULL;
-- The scheduler finds accounts whose period has ended.
CREATE INDEX accounts_period_end ON accounts (period_end);

-- One row per account and pool: what the current period allows and what it has used.
-- allowance NULL means the pool is unlimited.
CREATE TABLE account_pools (
    key_id        text NOT NULL REFERENCES accounts (key_id),
    pool          text NOT NULL,
    allowance     bigint CHECK (allowance >= 0),
    used          bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    overage_limit bigint NOT NULL DEFAULT 0 CHECK (overage_limit >= 0),
    overage_used  bigint NOT NULL DEFAULT 0 CHECK (overage_used >= 0),
    period_start  timestamptz NOT NULL,
    PRIMARY KEY (key_id, pool)
);

CREATE TABLE grants (
    key_id       text NOT NULL REFERENCES accounts (key_id),
    id           uuid NOT NULL,
    pool         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('allowance', 'rollover', 'pack', 'promotional', 'adjustment', 'refund')),
    amount       bigint NOT NULL CHECK (amount >= 0),
    remaining    bigint NOT NULL CHECK (remaining >= 0),
    effective_at timestamptz NOT NULL,
    expires_at   timestamptz,
    priority     integer NOT NULL DEFAULT 0,
    -- The period an allowance or rollover grant belongs to.
    period_start timestamptz,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL,
    voided_at    timestamptz,
    PRIMARY KEY (key_id, id),
    CHECK (remaining <= amount),
    CHECK (expires_at IS NULL OR expires_at > effective_at)
);

-- At most one allowance grant per account, pool and period.
CREATE UNIQUE INDEX grants_one_allowance_per_period
    ON grants (key_id, pool, period_start) WHERE kind = 'allowance';
-- The grants a debit can draw from, in consumption order.
CREATE INDEX grants_drawable
    ON grants (key_id, pool, expires_at, priority DESC, created_at, id)
    WHERE remaining > 0 AND voided_at IS NULL;
-- Routes that name a grant by id alone (void) find it here.
CREATE INDEX grants_by_id ON grants (id);
-- The scheduler finds grants that expired with credits left.
CREATE INDEX grants_expiring ON grants (expires_at)
    WHERE remaining > 0 AND voided_at IS NULL AND expires_at IS NOT NULL;

CREATE TABLE debits (
    key_id       text NOT NULL REFERENCES accounts (key_id),
    id           uuid NOT NULL,
    pool         text NOT NULL,
    operation    text,
    quantity     bigint NOT NULL CHECK (quantity > 0),
    cost         bigint NOT NULL CHECK (cost > 0),
    plan_id      text NOT NULL,
    plan_version integer NOT NULL,
    remaining    bigint,
    reset_at     timestamptz NOT NULL,
    drawn        jsonb NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL,
    -- The reservation this debit committed.
    reservation_id uuid,
    -- Credits refunded so far; never more than the cost.
    refunded     bigint NOT NULL DEFAULT 0,
    -- The part of the cost that went below zero into the pool's overage.
    overage      bigint NOT NULL DEFAULT 0 CHECK (overage >= 0),
    -- The Unkey keyId that made the debit (NULL when made on the account directly).
    source_key_id text,
    PRIMARY KEY (key_id, id),
    CONSTRAINT debits_refund_bounded CHECK (refunded >= 0 AND refunded <= cost)
);

CREATE INDEX debits_by_id ON debits (id);
CREATE INDEX debits_by_time ON debits (key_id, created_at);

-- The journal: append-only. One row per grant touched; grant_id is NULL only for debits of an
-- unlimited pool, which draw from no grant but are still recorded.
CREATE TABLE entries (
    key_id         text NOT NULL REFERENCES accounts (key_id),
    id             bigint GENERATED ALWAYS AS IDENTITY,
    pool           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('grant', 'debit', 'hold', 'release', 'expiration', 'void', 'refund', 'adjustment', 'overage')),
    amount         bigint NOT NULL,
    balance_after  bigint,
    grant_id       uuid,
    operation      text,
    debit_id       uuid,
    reservation_id uuid,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL,
    -- The adjustment that wrote the entry.
    adjustment_id  uuid,
    -- The Unkey keyId whose /v1/verify call wrote the entry.
    source_key_id  text,
    PRIMARY KEY (key_id, id)
);

CREATE INDEX entries_by_grant ON entries (key_id, grant_id);

CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       smallint NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE FUNCTION entries_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only';
END;
$$;

CREATE TRIGGER entries_append_only
    BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_are_append_only();

-- Admin corrections of a pool's balance: set, increment or decrement.
CREATE TABLE adjustments (
    key_id     text NOT NULL REFERENCES accounts (key_id),
    id         uuid NOT NULL,
    pool       text NOT NULL,
    op         text NOT NULL CHECK (op IN ('set', 'increment', 'decrement')),
    amount     bigint NOT NULL CHECK (amount >= 0),
    delta      bigint NOT NULL,
    reason     text NOT NULL,
    available_after bigint NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, id)
);

-- Holds of credits for long work.
CREATE TABLE reservations (
    key_id           text NOT NULL REFERENCES accounts (key_id),
    id               uuid NOT NULL,
    pool             text NOT NULL,
    operation        text,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    amount           bigint NOT NULL CHECK (amount > 0),
    status           text NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    expires_at       timestamptz NOT NULL,
    plan_id          text NOT NULL,
    plan_version     integer NOT NULL,
    -- The grants the hold drew from, in consumption order: [{grant_id, kind, amount}].
    drawn            jsonb NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    debit_id         uuid,
    committed_amount bigint,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (key_id, id)
);

CREATE INDEX reservations_by_id ON reservations (id);
-- Active holds past their TTL, for the scheduler and for the lazy release of one account.
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'active';
CREATE INDEX reservations_active_by_account ON reservations (key_id, expires_at)
    WHERE status = 'active';

CREATE TABLE refunds (
    key_id     text NOT NULL REFERENCES accounts (key_id),
    id         uuid NOT NULL,
    debit_id   uuid NOT NULL,
    pool       text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    reason     text,
    -- Where each part went: [{grant_id (drawn from), amount, returned_to (grant id or null)}].
    parts      jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, id)
);

CREATE INDEX refunds_by_debit ON refunds (key_id, debit_id);

-- What has been announced for a pool in a period: thresholds reached (and not resolved since),
-- and the first refusal. Notification state, not ledger state.
CREATE TABLE pool_alerts (
    key_id             text NOT NULL REFERENCES accounts (key_id),
    pool               text NOT NULL,
    period_start       timestamptz NOT NULL,
    thresholds_reached integer[] NOT NULL DEFAULT '{}',
    thresholds_resolved integer[] NOT NULL DEFAULT '{}',
    exhausted_at       timestamptz,
    PRIMARY KEY (key_id, pool, period_start)
);

-- The outbox: an event row is written in the transaction of the change it reports.
CREATE TABLE events (
    key_id     text NOT NULL,
    id         uuid NOT NULL,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    type       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, id)
);

CREATE INDEX events_by_account ON events (key_id, seq);

-- Webhook endpoints are configuration (a reference table, like plans).
CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    url         text NOT NULL,
    -- Event types to deliver; empty means every type.
    events      text[] NOT NULL,
    secret      text NOT NULL,
    description text,
    created_at  timestamptz NOT NULL
);

-- One row per endpoint and event: the delivery log and the work queue.
CREATE TABLE webhook_deliveries (
    key_id           text NOT NULL,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event_seq        bigint NOT NULL,
    event_type       text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    -- A worker that claimed the next attempt holds it until then.
    leased_until     timestamptz,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (key_id, endpoint_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, key_id, event_seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at DESC, event_seq DESC);

-- Usage for dashboards, kept in the debit's own transaction: a usage query reads a few
-- thousand hourly rows instead of every debit of the account.
CREATE TABLE usage_hourly (
    key_id        text NOT NULL REFERENCES accounts (key_id),
    hour          timestamptz NOT NULL,
    pool          text NOT NULL,
    operation     text NOT NULL DEFAULT '',
    source_key_id text NOT NULL DEFAULT '',
    credits       bigint NOT NULL,
    count         bigint NOT NULL,
    PRIMARY KEY (key_id, hour, pool, operation, source_key_id)
);
