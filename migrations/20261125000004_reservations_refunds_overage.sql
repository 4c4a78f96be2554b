-- Reservations (holds for long work), refunds, and overage.

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

ALTER TABLE debits ADD COLUMN reservation_id uuid;
-- Credits refunded so far; never more than the cost.
ALTER TABLE debits ADD COLUMN refunded bigint NOT NULL DEFAULT 0;
ALTER TABLE debits ADD CONSTRAINT debits_refund_bounded CHECK (refunded >= 0 AND refunded <= cost);
-- The part of the cost that went below zero into the pool's overage.
ALTER TABLE debits ADD COLUMN overage bigint NOT NULL DEFAULT 0 CHECK (overage >= 0);

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

-- The debit with overage: available = credits in active grants - overage used; a debit is
-- accepted while available - cost >= -overage_limit. It draws from the grants first and takes
-- the shortfall from overage (an `overage` entry without a grant).
CREATE OR REPLACE FUNCTION cl_debit_apply(
    p_key_id text, p_pool text, p_cost bigint, p_operation text, p_quantity bigint,
    p_plan_id text, p_plan_version integer, p_metadata jsonb, p_dry_run boolean,
    p_debit_id uuid, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_account   accounts%ROWTYPE;
    v_pool      account_pools%ROWTYPE;
    v_granted   bigint;
    v_available bigint;
    v_balance   bigint;
    v_need      bigint;
    v_take      bigint;
    v_overage   bigint := 0;
    v_grant     record;
    v_drawn     jsonb := '[]'::jsonb;
BEGIN
    SELECT * INTO v_account FROM accounts WHERE key_id = p_key_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'account_not_found');
    END IF;
    IF v_account.plan_id <> p_plan_id THEN
        RETURN jsonb_build_object('outcome', 'stale_plan');
    END IF;
    -- A period that has ended is rolled first (by the caller, in Rust, under this same lock),
    -- so no debit ever lands in a period that is over.
    IF v_account.period_end <= p_now THEN
        RETURN jsonb_build_object('outcome', 'period_ended');
    END IF;

    SELECT * INTO v_pool FROM account_pools WHERE key_id = p_key_id AND pool = p_pool;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'unknown_pool');
    END IF;

    IF v_pool.allowance IS NULL THEN
        -- Unlimited pool: always succeeds, still journaled.
        v_available := NULL;
        IF NOT p_dry_run THEN
            INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, operation,
                                 debit_id, created_at)
            VALUES (p_key_id, p_pool, 'debit', -p_cost, NULL, NULL, p_operation, p_debit_id, p_now);
        END IF;
    ELSE
        SELECT coalesce(sum(remaining), 0) INTO v_granted
          FROM grants
         WHERE key_id = p_key_id AND pool = p_pool AND remaining > 0 AND voided_at IS NULL
           AND effective_at <= p_now AND (expires_at IS NULL OR expires_at > p_now);
        v_available := v_granted - v_pool.overage_used;

        IF v_available - p_cost < -v_pool.overage_limit THEN
            RETURN jsonb_build_object(
                'outcome', 'exhausted',
                'available', v_available,
                'allowed', v_pool.allowance,
                'used', v_pool.used,
                'overage_limit', v_pool.overage_limit,
                'reset_at', v_account.period_end);
        END IF;

        v_need := p_cost;
        v_balance := v_available;
        FOR v_grant IN
            SELECT id, kind, remaining
              FROM grants
             WHERE key_id = p_key_id AND pool = p_pool AND remaining > 0 AND voided_at IS NULL
               AND effective_at <= p_now AND (expires_at IS NULL OR expires_at > p_now)
             ORDER BY expires_at ASC NULLS LAST, priority DESC, created_at ASC, id ASC
        LOOP
            EXIT WHEN v_need = 0;
            v_take := least(v_grant.remaining, v_need);
            v_need := v_need - v_take;
            v_balance := v_balance - v_take;
            v_drawn := v_drawn || jsonb_build_array(jsonb_build_object(
                'grant_id', v_grant.id, 'kind', v_grant.kind, 'amount', v_take));
            IF NOT p_dry_run THEN
                UPDATE grants SET remaining = remaining - v_take
                 WHERE key_id = p_key_id AND id = v_grant.id;
                INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, operation,
                                     debit_id, created_at)
                VALUES (p_key_id, p_pool, 'debit', -v_take, v_balance, v_grant.id, p_operation,
                        p_debit_id, p_now);
            END IF;
        END LOOP;

        IF v_need > 0 THEN
            -- What the grants could not cover goes into overage (checked above to fit).
            v_overage := v_need;
            v_balance := v_balance - v_overage;
            IF NOT p_dry_run THEN
                UPDATE account_pools SET overage_used = overage_used + v_overage
                 WHERE key_id = p_key_id AND pool = p_pool;
                INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, operation,
                                     debit_id, created_at)
                VALUES (p_key_id, p_pool, 'overage', -v_overage, v_balance, NULL, p_operation,
                        p_debit_id, p_now);
            END IF;
        END IF;
        v_available := v_balance;
    END IF;

    IF NOT p_dry_run THEN
        UPDATE account_pools SET used = used + p_cost WHERE key_id = p_key_id AND pool = p_pool;
        INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                            remaining, reset_at, drawn, metadata, overage, created_at)
        VALUES (p_key_id, p_debit_id, p_pool, p_operation, p_quantity, p_cost, p_plan_id,
                p_plan_version, v_available, v_account.period_end, v_drawn, p_metadata, v_overage,
                p_now);
    END IF;

    RETURN jsonb_build_object(
        'outcome', 'ok',
        'debit', jsonb_build_object(
            'id', CASE WHEN p_dry_run THEN NULL ELSE p_debit_id END,
            'key_id', p_key_id,
            'pool', p_pool,
            'operation', p_operation,
            'quantity', p_quantity,
            'cost', p_cost,
            'remaining', v_available,
            'reset_at', v_account.period_end,
            'drawn', v_drawn,
            'overage', v_overage,
            'reservation_id', NULL,
            'refunded', 0,
            'plan_id', p_plan_id,
            'plan_version', p_plan_version,
            'metadata', p_metadata,
            'dry_run', p_dry_run,
            'created_at', p_now));
END;
$$;
