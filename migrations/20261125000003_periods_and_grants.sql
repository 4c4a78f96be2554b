-- Billing periods and the life of credits: period rolls, grant expiry, packs, adjustments.

-- The scheduler finds accounts whose period has ended and grants that have expired unjournaled.
CREATE INDEX accounts_period_end ON accounts (period_end);
CREATE INDEX grants_expiring ON grants (expires_at)
    WHERE remaining > 0 AND voided_at IS NULL AND expires_at IS NOT NULL;

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

-- Entries written by an adjustment point at it.
ALTER TABLE entries ADD COLUMN adjustment_id uuid;

-- The debit refuses to run in a period that has ended: outcome "period_ended".
CREATE OR REPLACE FUNCTION cl_debit_apply(
    p_key_id text, p_pool text, p_cost bigint, p_operation text, p_quantity bigint,
    p_plan_id text, p_plan_version integer, p_metadata jsonb, p_dry_run boolean,
    p_debit_id uuid, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_account   accounts%ROWTYPE;
    v_pool      account_pools%ROWTYPE;
    v_available bigint;
    v_balance   bigint;
    v_need      bigint;
    v_take      bigint;
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
        SELECT coalesce(sum(remaining), 0) INTO v_available
          FROM grants
         WHERE key_id = p_key_id AND pool = p_pool AND remaining > 0 AND voided_at IS NULL
           AND effective_at <= p_now AND (expires_at IS NULL OR expires_at > p_now);

        IF v_available < p_cost THEN
            RETURN jsonb_build_object(
                'outcome', 'exhausted',
                'available', v_available,
                'allowed', v_pool.allowance,
                'used', v_pool.used,
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
            EXIT WHEN v_need = 0;
        END LOOP;
        v_available := v_balance;
    END IF;

    IF NOT p_dry_run THEN
        UPDATE account_pools SET used = used + p_cost WHERE key_id = p_key_id AND pool = p_pool;
        INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                            remaining, reset_at, drawn, metadata, created_at)
        VALUES (p_key_id, p_debit_id, p_pool, p_operation, p_quantity, p_cost, p_plan_id,
                p_plan_version, v_available, v_account.period_end, v_drawn, p_metadata, p_now);
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
            'plan_id', p_plan_id,
            'plan_version', p_plan_version,
            'metadata', p_metadata,
            'dry_run', p_dry_run,
            'created_at', p_now));
END;
$$;
