-- The storage functions run the same statements on every batch. Left to choose, PL/pgSQL planned
-- them afresh on every call (custom plans), and planning cost several times what executing did:
-- a one-account load spent about 85 % of its time in the planner. They now keep one generic plan
-- per connection.
--
-- A generic plan cannot know that an array of ids is empty, so the load looks up reservations,
-- debits and grants by id only when some were named; before, an empty list cost a scan of the
-- grants table on every load once the plan was generic. Nor does it know how long an account's
-- history is: a named debit was found by scanning the account's debits (a plan that was cheap
-- while the table was small), so every load grew slower as debits piled up.
--
-- A generic plan is made once per connection, possibly while a table is still nearly empty (a new
-- deployment, before autovacuum's first ANALYZE), and a sequential scan chosen then would stay
-- while the table grows. The load reads a few accounts' rows, always through an index, so it
-- rules sequential scans out. The persist only inserts, and updates through upserts (an index
-- probe each), so no plan of it scans a table.
CREATE OR REPLACE FUNCTION ledger_load_states(
    p_keys text[], p_reservations uuid[], p_debits uuid[], p_grants uuid[],
    p_idempotency_keys text[], p_lock boolean, p_skip_locked boolean, p_with_spent boolean)
RETURNS TABLE (account_key text, state jsonb)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_keys text[];
BEGIN
    -- Each lookup by id runs only when ids were given: with a generic plan, an empty array
    -- would still cost a scan.
    v_keys := p_keys;
    IF cardinality(p_reservations) > 0 THEN
        v_keys := v_keys || ARRAY(SELECT r.key_id FROM unnest(p_reservations) u (id)
                                    JOIN reservations r ON r.id = u.id);
    END IF;
    IF cardinality(p_debits) > 0 THEN
        v_keys := v_keys || ARRAY(SELECT d.key_id FROM unnest(p_debits) u (id)
                                    JOIN debits d ON d.id = u.id);
    END IF;
    IF cardinality(p_grants) > 0 THEN
        v_keys := v_keys || ARRAY(SELECT g.key_id FROM unnest(p_grants) u (id)
                                    JOIN grants g ON g.id = u.id);
    END IF;
    IF p_lock AND p_skip_locked THEN
        -- The scheduler passes over accounts another transaction is working on.
        SELECT coalesce(array_agg(l.key_id), '{}') INTO v_keys FROM (
            SELECT a.key_id FROM accounts a WHERE a.key_id = ANY (v_keys)
             ORDER BY a.key_id FOR UPDATE SKIP LOCKED) l;
    ELSIF p_lock THEN
        -- Only the accounts locked here are loaded: one created (and committed) after this
        -- statement's snapshot, while it waited for another batch's locks, is not, since this
        -- transaction does not hold its lock.
        SELECT coalesce(array_agg(l.key_id), '{}') INTO v_keys FROM (
            SELECT a.key_id FROM accounts a WHERE a.key_id = ANY (v_keys)
             ORDER BY a.key_id FOR UPDATE) l;
    END IF;
    -- What only named ids bring in (a debit and its refunds, a reservation that is no longer
    -- active) is read only when ids were named (CASE evaluates the subquery only then), and
    -- each id is looked up by its account and itself, LATERAL and OFFSET 0 keeping the planner
    -- to that unique-index probe: neither costs more as an account's history grows.
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
                                                 WHERE r.key_id = a.key_id AND r.status = 'active')
                                    OR (cardinality(p_reservations) > 0
                                        AND g.id IN (SELECT (x->>'grant_id')::uuid
                                                       FROM unnest(p_reservations) u (id),
                                                            LATERAL (SELECT r.drawn FROM reservations r
                                                                      WHERE r.key_id = a.key_id AND r.id = u.id
                                                                     OFFSET 0) r,
                                                            jsonb_array_elements(r.drawn) x))
                                    OR (cardinality(p_debits) > 0
                                        AND g.id IN (SELECT (x->>'grant_id')::uuid
                                                       FROM unnest(p_debits) u (id),
                                                            LATERAL (SELECT d.drawn FROM debits d
                                                                      WHERE d.key_id = a.key_id AND d.id = u.id
                                                                     OFFSET 0) d,
                                                            jsonb_array_elements(d.drawn) x)))),
                           '[]'),
        'reservations', coalesce((SELECT jsonb_agg(to_jsonb(r)) FROM reservations r
                                   WHERE r.key_id = a.key_id AND r.status = 'active'), '[]')
                        || CASE WHEN cardinality(p_reservations) = 0 THEN '[]'::jsonb ELSE
                           coalesce((SELECT jsonb_agg(to_jsonb(r))
                                       FROM (SELECT DISTINCT unnest(p_reservations) AS id) u,
                                            LATERAL (SELECT r.* FROM reservations r
                                                      WHERE r.key_id = a.key_id AND r.id = u.id
                                                     OFFSET 0) r
                                      WHERE r.status <> 'active'), '[]') END,
        'debits', CASE WHEN cardinality(p_debits) = 0 THEN '[]'::jsonb ELSE
                  coalesce((SELECT jsonb_agg(to_jsonb(d))
                              FROM (SELECT DISTINCT unnest(p_debits) AS id) u,
                                   LATERAL (SELECT d.* FROM debits d
                                             WHERE d.key_id = a.key_id AND d.id = u.id
                                            OFFSET 0) d), '[]') END,
        'refunds', CASE WHEN cardinality(p_debits) = 0 THEN '[]'::jsonb ELSE
                   coalesce((SELECT jsonb_agg(to_jsonb(f))
                               FROM (SELECT DISTINCT unnest(p_debits) AS id) u,
                                    LATERAL (SELECT f.* FROM refunds f
                                              WHERE f.key_id = a.key_id AND f.debit_id = u.id
                                             OFFSET 0) f), '[]') END,
        'idempotency', CASE WHEN cardinality(p_idempotency_keys) = 0 THEN '[]'::jsonb ELSE
                       coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'key', i.key, 'request_hash', i.request_hash,
                                          'response', i.response, 'created_at', i.created_at))
                                   FROM idempotency_keys i
                                  WHERE i.scope = a.key_id AND i.key = ANY (p_idempotency_keys)
                                    AND i.status > 0), '[]') END,
        'alerts', coalesce((SELECT jsonb_agg(to_jsonb(pa)) FROM pool_alerts pa
                             WHERE pa.key_id = a.key_id AND pa.period_start = a.period_start), '[]'))
      FROM accounts a
     WHERE a.key_id = ANY (v_keys)
     ORDER BY a.key_id;
END;
$$;

-- The effects of a batch: one statement per kind of row the batch has, each with its generic
-- plan. (One statement for every kind, as before, started an executor for all fourteen tables
-- on every batch, most of them with nothing to write.) A key is present only when it has rows.
-- The account's changes are an upsert, so no plan joins over the accounts table.
CREATE OR REPLACE FUNCTION ledger_persist(p_doc jsonb) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF p_doc ? 'new_accounts' THEN
        INSERT INTO accounts (key_id, plan_id, billing_anchor, period_start, period_end, external_id,
                              metadata, created_at, updated_at, shared)
        SELECT key_id, plan_id, billing_anchor, period_start, period_end, external_id, metadata,
               created_at, updated_at, shared
          FROM jsonb_populate_recordset(NULL::accounts, p_doc->'new_accounts');
    END IF;
    IF p_doc ? 'changed_accounts' THEN
        INSERT INTO accounts AS a (key_id, plan_id, billing_anchor, period_start, period_end,
                                   external_id, metadata, created_at, updated_at, shared)
        SELECT key_id, plan_id, billing_anchor, period_start, period_end, external_id, metadata,
               created_at, updated_at, shared
          FROM jsonb_populate_recordset(NULL::accounts, p_doc->'changed_accounts')
        ON CONFLICT (key_id) DO UPDATE
           SET plan_id = EXCLUDED.plan_id, billing_anchor = EXCLUDED.billing_anchor,
               period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
               external_id = EXCLUDED.external_id, metadata = EXCLUDED.metadata,
               updated_at = EXCLUDED.updated_at, shared = EXCLUDED.shared;
    END IF;
    IF p_doc ? 'pools' THEN
        INSERT INTO account_pools (key_id, pool, allowance, used, overage_limit, overage_used,
                                   period_start)
        SELECT key_id, pool, allowance, used, overage_limit, overage_used, period_start
          FROM jsonb_populate_recordset(NULL::account_pools, p_doc->'pools')
        ON CONFLICT (key_id, pool) DO UPDATE
           SET allowance = EXCLUDED.allowance, used = EXCLUDED.used,
               overage_limit = EXCLUDED.overage_limit, overage_used = EXCLUDED.overage_used,
               period_start = EXCLUDED.period_start;
    END IF;
    IF p_doc ? 'grants' THEN
        INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                            priority, period_start, metadata, created_at, voided_at)
        SELECT key_id, id, pool, kind, amount, remaining, effective_at, expires_at, priority,
               period_start, metadata, created_at, voided_at
          FROM jsonb_populate_recordset(NULL::grants, p_doc->'grants')
        ON CONFLICT (key_id, id) DO UPDATE
           SET amount = EXCLUDED.amount, remaining = EXCLUDED.remaining,
               expires_at = EXCLUDED.expires_at, voided_at = EXCLUDED.voided_at;
    END IF;
    IF p_doc ? 'entries' THEN
        INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, operation, debit_id,
                             reservation_id, metadata, created_at, adjustment_id, source_key_id)
        SELECT e.key_id, e.pool, e.kind, e.amount, e.balance_after, e.grant_id, e.operation,
               e.debit_id, e.reservation_id, e.metadata, e.created_at, e.adjustment_id,
               e.source_key_id
          FROM jsonb_populate_recordset(NULL::entries, p_doc->'entries') WITH ORDINALITY e
         ORDER BY e.ordinality;
    END IF;
    IF p_doc ? 'debits' THEN
        INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                            remaining, reset_at, drawn, metadata, created_at, reservation_id, refunded,
                            overage, source_key_id, period_start)
        SELECT key_id, id, pool, operation, quantity, cost, plan_id, plan_version, remaining, reset_at,
               drawn, metadata, created_at, reservation_id, refunded, overage, source_key_id,
               period_start
          FROM jsonb_populate_recordset(NULL::debits, p_doc->'debits')
        ON CONFLICT (key_id, id) DO UPDATE SET refunded = EXCLUDED.refunded;
    END IF;
    IF p_doc ? 'reservations' THEN
        INSERT INTO reservations (key_id, id, pool, operation, quantity, amount, status, expires_at,
                                  plan_id, plan_version, drawn, metadata, debit_id, committed_amount,
                                  created_at, updated_at)
        SELECT key_id, id, pool, operation, quantity, amount, status, expires_at, plan_id,
               plan_version, drawn, metadata, debit_id, committed_amount, created_at, updated_at
          FROM jsonb_populate_recordset(NULL::reservations, p_doc->'reservations')
        ON CONFLICT (key_id, id) DO UPDATE
           SET status = EXCLUDED.status, debit_id = EXCLUDED.debit_id,
               committed_amount = EXCLUDED.committed_amount, updated_at = EXCLUDED.updated_at;
    END IF;
    IF p_doc ? 'refunds' THEN
        INSERT INTO refunds (key_id, id, debit_id, pool, amount, reason, parts, created_at)
        SELECT key_id, id, debit_id, pool, amount, reason, parts, created_at
          FROM jsonb_populate_recordset(NULL::refunds, p_doc->'refunds');
    END IF;
    IF p_doc ? 'adjustments' THEN
        INSERT INTO adjustments (key_id, id, pool, op, amount, delta, reason, available_after,
                                 created_at)
        SELECT key_id, id, pool, op, amount, delta, reason, available_after, created_at
          FROM jsonb_populate_recordset(NULL::adjustments, p_doc->'adjustments');
    END IF;
    IF p_doc ? 'events' THEN
        -- Each event is queued for every webhook endpoint that wants it.
        WITH ev AS (
            INSERT INTO events (key_id, id, type, payload, created_at)
            SELECT e.key_id, e.id, e.type, e.payload, e.created_at
              FROM jsonb_populate_recordset(NULL::events, p_doc->'events') WITH ORDINALITY e
             ORDER BY e.ordinality
            RETURNING key_id, id, seq, type, created_at)
        INSERT INTO webhook_deliveries (key_id, endpoint_id, event_id, event_seq, event_type, status,
                                        next_attempt_at, created_at)
        SELECT ev.key_id, w.id, ev.id, ev.seq, ev.type, 'pending', ev.created_at, ev.created_at
          FROM ev
          JOIN webhook_endpoints w ON cardinality(w.events) = 0 OR ev.type = ANY (w.events);
    END IF;
    IF p_doc ? 'usage' THEN
        INSERT INTO usage_hourly (key_id, hour, pool, operation, source_key_id, credits, count)
        SELECT key_id, hour, pool, operation, source_key_id, credits, count
          FROM jsonb_populate_recordset(NULL::usage_hourly, p_doc->'usage')
        ON CONFLICT (key_id, hour, pool, operation, source_key_id) DO UPDATE
           SET credits = usage_hourly.credits + EXCLUDED.credits,
               count = usage_hourly.count + EXCLUDED.count;
    END IF;
    IF p_doc ? 'idempotency' THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
        SELECT scope, key, request_hash, 1, response, created_at
          FROM jsonb_populate_recordset(NULL::idempotency_keys, p_doc->'idempotency');
    END IF;
    IF p_doc ? 'alerts' THEN
        INSERT INTO pool_alerts (key_id, pool, period_start, thresholds_reached, thresholds_resolved,
                                 exhausted_at)
        SELECT key_id, pool, period_start, thresholds_reached, thresholds_resolved, exhausted_at
          FROM jsonb_populate_recordset(NULL::pool_alerts, p_doc->'alerts')
        ON CONFLICT (key_id, pool, period_start) DO UPDATE
           SET thresholds_reached = EXCLUDED.thresholds_reached,
               thresholds_resolved = EXCLUDED.thresholds_resolved,
               exhausted_at = EXCLUDED.exhausted_at;
    END IF;
END;
$$;

-- Callers now pass ledger_load_states its arrays directly (bound, or as literals beside BEGIN).
-- ledger_load(jsonb) stays for one release: replicas of the previous release, still running
-- during a rolling deploy, call it for every write.
