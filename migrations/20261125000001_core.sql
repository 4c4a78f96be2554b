-- Core ledger schema: plans (versioned, a reference table), accounts, per-pool period counters,
-- grants (buckets of credits), the append-only journal, debits and idempotency records.
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
    CHECK (period_start < period_end)
);

CREATE INDEX accounts_external_id ON accounts (external_id, key_id) WHERE external_id IS NOT NULL;

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
    PRIMARY KEY (key_id, id)
);

CREATE INDEX debits_by_id ON debits (id);

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
