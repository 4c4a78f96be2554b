-- The debit, as one SQL function so that a debit costs one round trip and holds the account's
-- row lock only while the function runs. Pricing happens in Rust before the call; this function
-- applies a known cost to the grants of one pool in consumption order:
--   soonest expires_at first (never-expiring last), then higher priority, then oldest.
-- src/ledger/rules.rs holds the same order (`consumption_order`) and a test keeps the two equal.
--
-- It locks the account row, runs at greatest(caller's now, period start) so a clock a little
-- behind another process's never misses a roll, refuses a period that has ended (the caller rolls
-- it first), takes what the grants cannot cover from the pool's overage up to its limit, counts
-- `used` and the hourly usage rollup, and announces thresholds and the first refusal of a period
-- through the outbox, all in the caller's one statement.
--
-- Outcomes (jsonb, key "outcome"):
--   ok                   {"debit": {...}} the debit as the API renders it
--   exhausted            {"available", "allowed", "used", "reset_at"}
--   account_not_found
--   unknown_pool
--   stale_plan           the account moved to another plan after the caller priced the debit
--   period_ended         the account's period is over: roll it, then call again
--   replay               {"status", "body"} a stored response for this idempotency key
--   idempotency_conflict the key was used with other parameters

-- Writes an event and queues it for every endpoint that wants it, in the caller's transaction.
CREATE FUNCTION cl_emit(p_key_id text, p_type text, p_payload jsonb, p_now timestamptz)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id  uuid := gen_random_uuid();
    v_seq bigint;
BEGIN
    INSERT INTO events (key_id, id, type, payload, created_at)
    VALUES (p_key_id, v_id, p_type, p_payload, p_now)
    RETURNING seq INTO v_seq;
    INSERT INTO webhook_deliveries (key_id, endpoint_id, event_id, event_seq, event_type, status,
                                    next_attempt_at, created_at)
    SELECT p_key_id, e.id, v_id, v_seq, p_type, 'pending', p_now, p_now
      FROM webhook_endpoints e
     WHERE cardinality(e.events) = 0 OR p_type = ANY (e.events);
    RETURN v_id;
END;
$$;

-- Announces the thresholds of a period's allowance used (the plan's, default 80% and 100%) that
-- `used` just crossed, each once per period. Called by every path that raises `used`.
CREATE FUNCTION cl_announce_thresholds(
    p_key_id text, p_pool text, p_plan_id text, p_plan_version integer,
    p_period_start timestamptz, p_period_end timestamptz, p_allowance bigint,
    p_old_used bigint, p_new_used bigint, p_available bigint, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_threshold integer;
    v_alerted   boolean;
BEGIN
    IF p_allowance IS NULL OR p_allowance <= 0 THEN
        RETURN;
    END IF;
    FOR v_threshold IN
        SELECT t::integer FROM plans p, jsonb_array_elements_text(p.thresholds) t
         WHERE p.id = p_plan_id AND p.version = p_plan_version
    LOOP
        CONTINUE WHEN NOT (p_old_used::numeric * 100 < v_threshold::numeric * p_allowance
                           AND p_new_used::numeric * 100 >= v_threshold::numeric * p_allowance);
        v_alerted := NULL;
        INSERT INTO pool_alerts (key_id, pool, period_start, thresholds_reached)
        VALUES (p_key_id, p_pool, p_period_start, ARRAY[v_threshold])
        ON CONFLICT (key_id, pool, period_start) DO UPDATE
           SET thresholds_reached = array_append(pool_alerts.thresholds_reached, v_threshold)
         WHERE NOT (v_threshold = ANY (pool_alerts.thresholds_reached))
        RETURNING true INTO v_alerted;
        IF v_alerted THEN
            PERFORM cl_emit(p_key_id, 'credits.threshold_reached', jsonb_build_object(
                'key_id', p_key_id, 'pool', p_pool, 'threshold', v_threshold,
                'used', p_new_used, 'allowance', p_allowance, 'available', p_available,
                'period', jsonb_build_object('start', p_period_start, 'end', p_period_end)),
                p_now);
        END IF;
    END LOOP;
END;
$$;

-- Announces the first refusal of a period in a pool (not a ledger change).
CREATE FUNCTION cl_announce_exhausted(
    p_key_id text, p_pool text, p_period_start timestamptz, p_details jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_alerted boolean;
BEGIN
    INSERT INTO pool_alerts (key_id, pool, period_start, exhausted_at)
    VALUES (p_key_id, p_pool, p_period_start, p_now)
    ON CONFLICT (key_id, pool, period_start) DO UPDATE SET exhausted_at = p_now
     WHERE pool_alerts.exhausted_at IS NULL
    RETURNING true INTO v_alerted;
    IF v_alerted THEN
        PERFORM cl_emit(p_key_id, 'credits.exhausted', p_details, p_now);
    END IF;
END;
$$;

-- Adds a debit to the hourly usage rollup.
CREATE FUNCTION cl_usage_add(p_key_id text, p_pool text, p_operation text, p_source_key_id text,
                             p_at timestamptz, p_cost bigint)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO usage_hourly (key_id, hour, pool, operation, source_key_id, credits, count)
    VALUES (p_key_id, date_trunc('hour', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', p_pool,
            coalesce(p_operation, ''), coalesce(p_source_key_id, ''), p_cost, 1)
    ON CONFLICT (key_id, hour, pool, operation, source_key_id)
    DO UPDATE SET credits = usage_hourly.credits + p_cost, count = usage_hourly.count + 1;
$$;

CREATE FUNCTION cl_debit_apply(
    p_key_id text, p_pool text, p_cost bigint, p_operation text, p_quantity bigint,
    p_plan_id text, p_plan_version integer, p_metadata jsonb, p_dry_run boolean,
    p_debit_id uuid, p_source_key_id text, p_now timestamptz)
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
    v_now       timestamptz;
BEGIN
    SELECT * INTO v_account FROM accounts WHERE key_id = p_key_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'account_not_found');
    END IF;
    -- The caller read its clock before it waited for this lock; another process may have rolled
    -- the period meanwhile, and clocks of several processes differ a little. Nothing happens in
    -- this account before its current period started.
    v_now := greatest(p_now, v_account.period_start);
    IF v_account.plan_id <> p_plan_id THEN
        RETURN jsonb_build_object('outcome', 'stale_plan');
    END IF;
    -- A period that has ended is rolled first (by the caller, in Rust, under this same lock),
    -- so no debit ever lands in a period that is over.
    IF v_account.period_end <= v_now THEN
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
                                 debit_id, source_key_id, created_at)
            VALUES (p_key_id, p_pool, 'debit', -p_cost, NULL, NULL, p_operation, p_debit_id,
                    p_source_key_id, v_now);
        END IF;
    ELSE
        SELECT coalesce(sum(remaining), 0) INTO v_granted
          FROM grants
         WHERE key_id = p_key_id AND pool = p_pool AND remaining > 0 AND voided_at IS NULL
           AND effective_at <= v_now AND (expires_at IS NULL OR expires_at > v_now);
        v_available := v_granted - v_pool.overage_used;

        IF v_available - p_cost < -v_pool.overage_limit THEN
            -- The first refusal of the period in this pool is an event (not a ledger change).
            IF NOT p_dry_run THEN
                PERFORM cl_announce_exhausted(p_key_id, p_pool, v_account.period_start,
                    jsonb_build_object(
                        'key_id', p_key_id, 'pool', p_pool, 'operation', p_operation,
                        'required', p_cost, 'available', v_available,
                        'allowed', v_pool.allowance, 'used', v_pool.used,
                        'overage_limit', v_pool.overage_limit,
                        'period', jsonb_build_object('start', v_account.period_start,
                                                     'end', v_account.period_end),
                        'reset_at', v_account.period_end),
                    v_now);
            END IF;
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
               AND effective_at <= v_now AND (expires_at IS NULL OR expires_at > v_now)
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
                                     debit_id, source_key_id, created_at)
                VALUES (p_key_id, p_pool, 'debit', -v_take, v_balance, v_grant.id, p_operation,
                        p_debit_id, p_source_key_id, v_now);
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
                                     debit_id, source_key_id, created_at)
                VALUES (p_key_id, p_pool, 'overage', -v_overage, v_balance, NULL, p_operation,
                        p_debit_id, p_source_key_id, v_now);
            END IF;
        END IF;
        v_available := v_balance;
    END IF;

    IF NOT p_dry_run THEN
        UPDATE account_pools SET used = used + p_cost WHERE key_id = p_key_id AND pool = p_pool;
        PERFORM cl_announce_thresholds(p_key_id, p_pool, p_plan_id, p_plan_version,
                                       v_account.period_start, v_account.period_end,
                                       v_pool.allowance, v_pool.used, v_pool.used + p_cost,
                                       v_available, v_now);
        PERFORM cl_usage_add(p_key_id, p_pool, p_operation, p_source_key_id, v_now, p_cost);
        INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                            remaining, reset_at, drawn, metadata, overage, source_key_id,
                            created_at)
        VALUES (p_key_id, p_debit_id, p_pool, p_operation, p_quantity, p_cost, p_plan_id,
                p_plan_version, v_available, v_account.period_end, v_drawn, p_metadata, v_overage,
                p_source_key_id, v_now);
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
            'source_key_id', p_source_key_id,
            'plan_id', p_plan_id,
            'plan_version', p_plan_version,
            'metadata', p_metadata,
            'dry_run', p_dry_run,
            'created_at', v_now));
END;
$$;

CREATE FUNCTION cl_debit(
    p_key_id text, p_pool text, p_cost bigint, p_operation text, p_quantity bigint,
    p_plan_id text, p_plan_version integer, p_metadata jsonb, p_dry_run boolean,
    p_idem_key text, p_idem_hash text, p_debit_id uuid, p_source_key_id text,
    p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_idem   idempotency_keys%ROWTYPE;
    v_result jsonb;
    v_claim  boolean := p_idem_key IS NOT NULL AND NOT p_dry_run;
BEGIN
    IF v_claim THEN
        LOOP
            INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
            VALUES (p_key_id, p_idem_key, p_idem_hash, 0, 'null'::jsonb, p_now)
            ON CONFLICT DO NOTHING;
            EXIT WHEN FOUND;
            SELECT * INTO v_idem FROM idempotency_keys WHERE scope = p_key_id AND key = p_idem_key;
            IF FOUND THEN
                IF v_idem.request_hash <> p_idem_hash THEN
                    RETURN jsonb_build_object('outcome', 'idempotency_conflict');
                END IF;
                RETURN jsonb_build_object('outcome', 'replay', 'status', v_idem.status,
                                          'body', v_idem.response);
            END IF;
            -- The conflicting row vanished (its retention ended): claim again.
        END LOOP;
    END IF;

    v_result := cl_debit_apply(p_key_id, p_pool, p_cost, p_operation, p_quantity, p_plan_id,
                               p_plan_version, p_metadata, p_dry_run, p_debit_id,
                               p_source_key_id, p_now);

    IF v_claim THEN
        IF v_result->>'outcome' = 'ok' THEN
            UPDATE idempotency_keys SET status = 201, response = v_result->'debit'
             WHERE scope = p_key_id AND key = p_idem_key;
        ELSE
            DELETE FROM idempotency_keys WHERE scope = p_key_id AND key = p_idem_key;
        END IF;
    END IF;
    RETURN v_result;
END;
$$;
