-- The money rules moved to the account state machine in Rust (src/ledger): the SQL functions that
-- decided debits, thresholds and refusals go. SQL keeps storage, constraints and the append-only
-- journal trigger. What replaces them here is storage only: one function that loads and row-locks
-- the states of a set of accounts in one round trip, and one that writes back the effects of a
-- batch of commands in one statement.

DROP FUNCTION cl_debit(text, text, bigint, text, bigint, text, integer, jsonb, boolean, text, text,
                       uuid, text, timestamptz);
DROP FUNCTION cl_debit_apply(text, text, bigint, text, bigint, text, integer, jsonb, boolean, uuid,
                             text, timestamptz);
DROP FUNCTION cl_announce_thresholds(text, text, text, integer, timestamptz, timestamptz, bigint,
                                     bigint, bigint, bigint, timestamptz);
DROP FUNCTION cl_announce_exhausted(text, text, timestamptz, jsonb, timestamptz);
DROP FUNCTION cl_usage_add(text, text, text, text, timestamptz, bigint);
DROP FUNCTION cl_emit(text, text, jsonb, timestamptz);

-- The period a debit counts in, by its start: a refund gives back to `used` and to the overage
-- owed only in that period. A period closed early by a plan change can end where the new one
-- does, so the end alone (reset_at) does not tell. NULL for debits made before this column: for
-- them, the period that contained created_at and ended at reset_at.
ALTER TABLE debits ADD COLUMN period_start timestamptz;

-- Idempotency records of the ledger are written with their answer, in the transaction of the
-- work, under the account's lock: status is 1 for them. Status 0 still marks a claim in progress
-- for account-less routes (webhook endpoints), which claim first and finish later.
COMMENT ON COLUMN idempotency_keys.status IS
    '0 while a claim is in progress; any other value: the stored response is final';

-- The states of the accounts named by key, and of those owning the named reservations, debits
-- and grants, as one JSON document per account: the account, the latest version of its plan, its
-- pools, the grants in play (those with credits left, this period's, those its holds and the
-- named debits drew from, and the named ones), its active holds and the named reservations, the
-- named debits with their refunds, the named idempotency records, and this period's alerts.
-- Spent grants that never expire can change only through a hold or a refund that names them, so
-- they come along only with p_with_spent, for a balance that lists every active grant.
--
-- With p_lock the accounts are row-locked first, in key order, so that two batches never wait on
-- each other in a cycle; with p_skip_locked too, accounts locked elsewhere are left out. The state is read by a second statement, which sees everything that
-- committed while the first waited for the locks.
CREATE FUNCTION ledger_load_states(
    p_keys text[], p_reservations uuid[], p_debits uuid[], p_grants uuid[],
    p_idempotency_keys text[], p_lock boolean, p_skip_locked boolean, p_with_spent boolean)
RETURNS TABLE (account_key text, state jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_keys text[];
BEGIN
    SELECT coalesce(array_agg(DISTINCT n.k), '{}') INTO v_keys FROM (
        SELECT unnest(p_keys) AS k
        UNION ALL SELECT r.key_id FROM reservations r WHERE r.id = ANY (p_reservations)
        UNION ALL SELECT d.key_id FROM debits d WHERE d.id = ANY (p_debits)
        UNION ALL SELECT g.key_id FROM grants g WHERE g.id = ANY (p_grants)) n;
    IF p_lock AND p_skip_locked THEN
        -- The scheduler passes over accounts another transaction is working on.
        SELECT coalesce(array_agg(l.key_id), '{}') INTO v_keys FROM (
            SELECT a.key_id FROM accounts a WHERE a.key_id = ANY (v_keys)
             ORDER BY a.key_id FOR UPDATE SKIP LOCKED) l;
    ELSIF p_lock THEN
        PERFORM 1 FROM accounts a WHERE a.key_id = ANY (v_keys) ORDER BY a.key_id FOR UPDATE;
    END IF;
    RETURN QUERY
    SELECT a.key_id, jsonb_build_object(
        'account', to_jsonb(a),
        'plan', (SELECT to_jsonb(p) FROM plan_heads h
                   JOIN plans p ON p.id = h.id AND p.version = h.latest_version
                  WHERE h.id = a.plan_id),
        'pools', coalesce((SELECT jsonb_agg(to_jsonb(ap)) FROM account_pools ap
                            WHERE ap.key_id = a.key_id), '[]'),
        'grants', coalesce((SELECT jsonb_agg(to_jsonb(g)) FROM grants g
                             WHERE g.key_id = a.key_id
                               AND ((g.voided_at IS NULL
                                     AND (g.remaining > 0 OR g.expires_at > a.period_start
                                          OR (p_with_spent AND g.expires_at IS NULL)))
                                    OR (g.kind = 'allowance' AND g.period_start = a.period_start)
                                    OR g.id = ANY (p_grants)
                                    OR g.id IN (SELECT (x->>'grant_id')::uuid
                                                  FROM reservations r, jsonb_array_elements(r.drawn) x
                                                 WHERE r.key_id = a.key_id
                                                   AND (r.status = 'active' OR r.id = ANY (p_reservations)))
                                    OR g.id IN (SELECT (x->>'grant_id')::uuid
                                                  FROM debits d, jsonb_array_elements(d.drawn) x
                                                 WHERE d.key_id = a.key_id AND d.id = ANY (p_debits)))),
                           '[]'),
        'reservations', coalesce((SELECT jsonb_agg(to_jsonb(r)) FROM reservations r
                                   WHERE r.key_id = a.key_id
                                     AND (r.status = 'active' OR r.id = ANY (p_reservations))), '[]'),
        'debits', coalesce((SELECT jsonb_agg(to_jsonb(d)) FROM debits d
                             WHERE d.key_id = a.key_id AND d.id = ANY (p_debits)), '[]'),
        'refunds', coalesce((SELECT jsonb_agg(to_jsonb(f)) FROM refunds f
                              WHERE f.key_id = a.key_id AND f.debit_id = ANY (p_debits)), '[]'),
        'idempotency', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'key', i.key, 'request_hash', i.request_hash,
                                          'response', i.response, 'created_at', i.created_at))
                                   FROM idempotency_keys i
                                  WHERE i.scope = a.key_id AND i.key = ANY (p_idempotency_keys)
                                    AND i.status > 0), '[]'),
        'alerts', coalesce((SELECT jsonb_agg(to_jsonb(pa)) FROM pool_alerts pa
                             WHERE pa.key_id = a.key_id AND pa.period_start = a.period_start), '[]'))
      FROM accounts a
     WHERE a.key_id = ANY (v_keys)
     ORDER BY a.key_id;
END;
$$;

-- Writes back the effects of a batch of commands, whatever its size, in one statement: rows to
-- insert or update per table, as JSON arrays of records under one key each (see
-- src/db/state.rs). Events are queued for every webhook endpoint that wants them.
CREATE FUNCTION ledger_persist(p_doc jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    WITH
    w_new_accounts AS (
        INSERT INTO accounts (key_id, plan_id, billing_anchor, period_start, period_end, external_id,
                              metadata, created_at, updated_at, shared)
        SELECT key_id, plan_id, billing_anchor, period_start, period_end, external_id, metadata,
               created_at, updated_at, shared
          FROM jsonb_populate_recordset(NULL::accounts, p_doc->'new_accounts')),
    w_accounts AS (
        UPDATE accounts a
           SET plan_id = r.plan_id, billing_anchor = r.billing_anchor, period_start = r.period_start,
               period_end = r.period_end, external_id = r.external_id, metadata = r.metadata,
               updated_at = r.updated_at, shared = r.shared
          FROM jsonb_populate_recordset(NULL::accounts, p_doc->'changed_accounts') r
         WHERE a.key_id = r.key_id),
    w_pools AS (
        INSERT INTO account_pools (key_id, pool, allowance, used, overage_limit, overage_used,
                                   period_start)
        SELECT key_id, pool, allowance, used, overage_limit, overage_used, period_start
          FROM jsonb_populate_recordset(NULL::account_pools, p_doc->'pools')
        ON CONFLICT (key_id, pool) DO UPDATE
           SET allowance = EXCLUDED.allowance, used = EXCLUDED.used,
               overage_limit = EXCLUDED.overage_limit, overage_used = EXCLUDED.overage_used,
               period_start = EXCLUDED.period_start),
    w_grants AS (
        INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                            priority, period_start, metadata, created_at, voided_at)
        SELECT key_id, id, pool, kind, amount, remaining, effective_at, expires_at, priority,
               period_start, metadata, created_at, voided_at
          FROM jsonb_populate_recordset(NULL::grants, p_doc->'grants')
        ON CONFLICT (key_id, id) DO UPDATE
           SET amount = EXCLUDED.amount, remaining = EXCLUDED.remaining,
               expires_at = EXCLUDED.expires_at, voided_at = EXCLUDED.voided_at),
    w_entries AS (
        INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, operation, debit_id,
                             reservation_id, metadata, created_at, adjustment_id, source_key_id)
        SELECT e.key_id, e.pool, e.kind, e.amount, e.balance_after, e.grant_id, e.operation,
               e.debit_id, e.reservation_id, e.metadata, e.created_at, e.adjustment_id,
               e.source_key_id
          FROM jsonb_populate_recordset(NULL::entries, p_doc->'entries') WITH ORDINALITY e
         ORDER BY e.ordinality),
    w_debits AS (
        INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                            remaining, reset_at, drawn, metadata, created_at, reservation_id, refunded,
                            overage, source_key_id, period_start)
        SELECT key_id, id, pool, operation, quantity, cost, plan_id, plan_version, remaining, reset_at,
               drawn, metadata, created_at, reservation_id, refunded, overage, source_key_id,
               period_start
          FROM jsonb_populate_recordset(NULL::debits, p_doc->'debits')
        ON CONFLICT (key_id, id) DO UPDATE SET refunded = EXCLUDED.refunded),
    w_reservations AS (
        INSERT INTO reservations (key_id, id, pool, operation, quantity, amount, status, expires_at,
                                  plan_id, plan_version, drawn, metadata, debit_id, committed_amount,
                                  created_at, updated_at)
        SELECT key_id, id, pool, operation, quantity, amount, status, expires_at, plan_id,
               plan_version, drawn, metadata, debit_id, committed_amount, created_at, updated_at
          FROM jsonb_populate_recordset(NULL::reservations, p_doc->'reservations')
        ON CONFLICT (key_id, id) DO UPDATE
           SET status = EXCLUDED.status, debit_id = EXCLUDED.debit_id,
               committed_amount = EXCLUDED.committed_amount, updated_at = EXCLUDED.updated_at),
    w_refunds AS (
        INSERT INTO refunds (key_id, id, debit_id, pool, amount, reason, parts, created_at)
        SELECT key_id, id, debit_id, pool, amount, reason, parts, created_at
          FROM jsonb_populate_recordset(NULL::refunds, p_doc->'refunds')),
    w_adjustments AS (
        INSERT INTO adjustments (key_id, id, pool, op, amount, delta, reason, available_after,
                                 created_at)
        SELECT key_id, id, pool, op, amount, delta, reason, available_after, created_at
          FROM jsonb_populate_recordset(NULL::adjustments, p_doc->'adjustments')),
    w_events AS (
        INSERT INTO events (key_id, id, type, payload, created_at)
        SELECT e.key_id, e.id, e.type, e.payload, e.created_at
          FROM jsonb_populate_recordset(NULL::events, p_doc->'events') WITH ORDINALITY e
         ORDER BY e.ordinality
        RETURNING key_id, id, seq, type, created_at),
    w_deliveries AS (
        INSERT INTO webhook_deliveries (key_id, endpoint_id, event_id, event_seq, event_type, status,
                                        next_attempt_at, created_at)
        SELECT ev.key_id, w.id, ev.id, ev.seq, ev.type, 'pending', ev.created_at, ev.created_at
          FROM w_events ev
          JOIN webhook_endpoints w ON cardinality(w.events) = 0 OR ev.type = ANY (w.events)),
    w_usage AS (
        INSERT INTO usage_hourly (key_id, hour, pool, operation, source_key_id, credits, count)
        SELECT key_id, hour, pool, operation, source_key_id, credits, count
          FROM jsonb_populate_recordset(NULL::usage_hourly, p_doc->'usage')
        ON CONFLICT (key_id, hour, pool, operation, source_key_id) DO UPDATE
           SET credits = usage_hourly.credits + EXCLUDED.credits,
               count = usage_hourly.count + EXCLUDED.count),
    w_idempotency AS (
        INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
        SELECT scope, key, request_hash, 1, response, created_at
          FROM jsonb_populate_recordset(NULL::idempotency_keys, p_doc->'idempotency'))
    INSERT INTO pool_alerts (key_id, pool, period_start, thresholds_reached, thresholds_resolved,
                             exhausted_at)
    SELECT key_id, pool, period_start, thresholds_reached, thresholds_resolved, exhausted_at
      FROM jsonb_populate_recordset(NULL::pool_alerts, p_doc->'alerts')
    ON CONFLICT (key_id, pool, period_start) DO UPDATE
       SET thresholds_reached = EXCLUDED.thresholds_reached,
           thresholds_resolved = EXCLUDED.thresholds_resolved,
           exhausted_at = EXCLUDED.exhausted_at;
END;
$$;

-- ledger_load_states with its arguments in one JSON document, so a caller can send it in the
-- same message as BEGIN.
CREATE FUNCTION ledger_load(p_doc jsonb)
RETURNS TABLE (account_key text, state jsonb)
LANGUAGE sql AS $$
    SELECT * FROM ledger_load_states(
        ARRAY(SELECT jsonb_array_elements_text(p_doc->'keys')),
        ARRAY(SELECT jsonb_array_elements_text(p_doc->'reservations')::uuid),
        ARRAY(SELECT jsonb_array_elements_text(p_doc->'debits')::uuid),
        ARRAY(SELECT jsonb_array_elements_text(p_doc->'grants')::uuid),
        ARRAY(SELECT jsonb_array_elements_text(p_doc->'idempotency_keys')),
        p_doc->>'lock' <> 'none',
        p_doc->>'lock' = 'skip_locked',
        coalesce((p_doc->>'with_spent')::boolean, false));
$$;
