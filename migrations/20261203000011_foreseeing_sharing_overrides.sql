-- Issue 14: what thresholds measure, and warnings before grants expire.

-- `used` stays every credit the period's debits took; `allowance_used` is the part this period's
-- allowance grant paid for, which the percentage thresholds measure. Rows of the period in
-- progress are filled from their debits (what they drew from allowance grants) less the refunds
-- that went back to an allowance grant.
ALTER TABLE account_pools ADD COLUMN allowance_used bigint NOT NULL DEFAULT 0;
UPDATE account_pools ap
   SET allowance_used = greatest(0,
       coalesce((SELECT sum((x->>'amount')::bigint)
                   FROM debits d
                  CROSS JOIN LATERAL jsonb_array_elements(d.drawn) x
                   JOIN grants g ON g.key_id = d.key_id AND g.id = (x->>'grant_id')::uuid
                  WHERE d.key_id = ap.key_id AND d.pool = ap.pool
                    AND d.period_start = ap.period_start AND g.kind = 'allowance'
                    AND g.period_start = ap.period_start), 0)
     - coalesce((SELECT sum((x->>'amount')::bigint)
                   FROM refunds f
                   JOIN debits d ON d.key_id = f.key_id AND d.id = f.debit_id
                  CROSS JOIN LATERAL jsonb_array_elements(f.parts) x
                   JOIN grants g ON g.key_id = f.key_id AND g.id = (x->>'grant_id')::uuid
                  WHERE f.key_id = ap.key_id AND d.pool = ap.pool
                    AND d.period_start = ap.period_start AND g.kind = 'allowance'
                    AND g.period_start = ap.period_start), 0))
 WHERE ap.used > 0;

-- grant.expiring: how many days ahead a plan warns, and when a grant was warned about.
ALTER TABLE plans ADD COLUMN expiry_warning_days integer NOT NULL DEFAULT 7
    CHECK (expiry_warning_days BETWEEN 0 AND 365);
ALTER TABLE grants ADD COLUMN expiry_warned_at timestamptz;
-- The scheduler finds the grants still to warn about here, soonest expiry first.
CREATE INDEX grants_expiry_unwarned ON grants (expires_at)
    WHERE remaining > 0 AND voided_at IS NULL AND expiry_warned_at IS NULL
      AND kind IN ('pack', 'promotional', 'adjustment', 'refund');

-- Per-account overrides of the plan's terms (ledger/overrides.rs), and what of them each debit,
-- and each hold it commits, was priced under.
ALTER TABLE accounts ADD COLUMN overrides jsonb;
ALTER TABLE debits ADD COLUMN overrides jsonb;
ALTER TABLE reservations ADD COLUMN overrides jsonb;
-- The member key a hold was made for, carried to its debit.
ALTER TABLE reservations ADD COLUMN source_key_id text;
-- The membership (its `members.created_at`) whose use a member key's debit counts in.
ALTER TABLE debits ADD COLUMN member_since timestamptz;

-- Members of shared accounts (DESIGN.md section 5, "Shared accounts, per-key caps"). A key is a
-- member of at most one account: `member_keys` is the directory a request addressed to a member
-- key is routed through (distributed by the member key); `members` holds, with the account, the
-- member's per-period caps and what it used this period (accepted debits, committed holds, less
-- refunds), read and written with the account's state under its row lock.
CREATE TABLE member_keys (
    member_key_id text PRIMARY KEY,
    -- The shared account (no foreign key: the directory is distributed by the member key; rows
    -- are written and removed with the account's `members` row, under its lock).
    key_id        text NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE TABLE members (
    key_id        text NOT NULL REFERENCES accounts (key_id),
    member_key_id text NOT NULL,
    caps          jsonb NOT NULL DEFAULT '{}'::jsonb,
    period_start  timestamptz,
    used          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (key_id, member_key_id)
);

-- The load of 20261202000003, which also brings in the shared account of a member key named,
-- and the member records the commands speak for. The previous signature stays for one release:
-- replicas of the previous release call it during a rolling deploy.
CREATE FUNCTION ledger_load_states(
    p_keys text[], p_reservations uuid[], p_debits uuid[], p_grants uuid[],
    p_idempotency_keys text[], p_lock boolean, p_skip_locked boolean, p_with_spent boolean,
    p_members text[])
RETURNS TABLE (account_key text, state jsonb)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_keys text[];
BEGIN
    -- Each lookup by id runs only when ids were given: with a generic plan, an empty array
    -- would still cost a scan.
    v_keys := p_keys;
    -- A key named that is a member of a shared account brings in that account.
    IF cardinality(p_keys) > 0 THEN
        v_keys := v_keys || ARRAY(SELECT mk.key_id FROM member_keys mk
                                   WHERE mk.member_key_id = ANY (p_keys));
    END IF;
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
                             WHERE pa.key_id = a.key_id AND pa.period_start = a.period_start), '[]'),
        -- The members a command speaks for: named, a debit's or a reservation's maker.
        'members', coalesce((SELECT jsonb_agg(to_jsonb(m)) FROM members m
                              WHERE m.key_id = a.key_id
                                AND (m.member_key_id = ANY (p_keys)
                                     OR m.member_key_id = ANY (p_members)
                                     OR (cardinality(p_debits) > 0
                                         AND m.member_key_id IN (
                                             SELECT d.source_key_id
                                               FROM unnest(p_debits) u (id),
                                                    LATERAL (SELECT d.source_key_id FROM debits d
                                                              WHERE d.key_id = a.key_id AND d.id = u.id
                                                             OFFSET 0) d))
                                     OR (cardinality(p_reservations) > 0
                                         AND m.member_key_id IN (
                                             SELECT r.source_key_id
                                               FROM unnest(p_reservations) u (id),
                                                    LATERAL (SELECT r.source_key_id FROM reservations r
                                                              WHERE r.key_id = a.key_id AND r.id = u.id
                                                             OFFSET 0) r)))), '[]'))
      FROM accounts a
     WHERE a.key_id = ANY (v_keys)
     ORDER BY a.key_id;
END;
$$;

-- The persist function of 20261203000010, with the columns above written, and what members
-- used this period.
CREATE OR REPLACE FUNCTION ledger_persist(p_doc jsonb) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF p_doc ? 'new_accounts' THEN
        INSERT INTO accounts (key_id, plan_id, billing_anchor, period_start, period_end, external_id,
                              metadata, created_at, updated_at, shared, auto_top_up, overrides)
        SELECT key_id, plan_id, billing_anchor, period_start, period_end, external_id, metadata,
               created_at, updated_at, shared, auto_top_up, overrides
          FROM jsonb_populate_recordset(NULL::accounts, p_doc->'new_accounts');
    END IF;
    IF p_doc ? 'changed_accounts' THEN
        INSERT INTO accounts AS a (key_id, plan_id, billing_anchor, period_start, period_end,
                                   external_id, metadata, created_at, updated_at, shared,
                                   auto_top_up, overrides)
        SELECT key_id, plan_id, billing_anchor, period_start, period_end, external_id, metadata,
               created_at, updated_at, shared, auto_top_up, overrides
          FROM jsonb_populate_recordset(NULL::accounts, p_doc->'changed_accounts')
        ON CONFLICT (key_id) DO UPDATE
           SET plan_id = EXCLUDED.plan_id, billing_anchor = EXCLUDED.billing_anchor,
               period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
               external_id = EXCLUDED.external_id, metadata = EXCLUDED.metadata,
               updated_at = EXCLUDED.updated_at, shared = EXCLUDED.shared,
               auto_top_up = EXCLUDED.auto_top_up, overrides = EXCLUDED.overrides;
    END IF;
    IF p_doc ? 'pools' THEN
        INSERT INTO account_pools (key_id, pool, allowance, used, overage_limit, overage_used,
                                   period_start, top_up_in_flight, top_ups_requested,
                                   allowance_used)
        SELECT key_id, pool, allowance, used, overage_limit, overage_used, period_start,
               top_up_in_flight, coalesce(top_ups_requested, 0), coalesce(allowance_used, 0)
          FROM jsonb_populate_recordset(NULL::account_pools, p_doc->'pools')
        ON CONFLICT (key_id, pool) DO UPDATE
           SET allowance = EXCLUDED.allowance, used = EXCLUDED.used,
               allowance_used = EXCLUDED.allowance_used,
               overage_limit = EXCLUDED.overage_limit, overage_used = EXCLUDED.overage_used,
               period_start = EXCLUDED.period_start,
               top_up_in_flight = EXCLUDED.top_up_in_flight,
               top_ups_requested = EXCLUDED.top_ups_requested;
    END IF;
    IF p_doc ? 'grants' THEN
        INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                            priority, period_start, metadata, created_at, voided_at, pack,
                            expiry_warned_at)
        SELECT key_id, id, pool, kind, amount, remaining, effective_at, expires_at, priority,
               period_start, metadata, created_at, voided_at, pack, expiry_warned_at
          FROM jsonb_populate_recordset(NULL::grants, p_doc->'grants')
        ON CONFLICT (key_id, id) DO UPDATE
           SET amount = EXCLUDED.amount, remaining = EXCLUDED.remaining,
               expires_at = EXCLUDED.expires_at, voided_at = EXCLUDED.voided_at,
               expiry_warned_at = EXCLUDED.expiry_warned_at;
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
                            overage, source_key_id, period_start, overrides, member_since)
        SELECT key_id, id, pool, operation, quantity, cost, plan_id, plan_version, remaining, reset_at,
               drawn, metadata, created_at, reservation_id, refunded, overage, source_key_id,
               period_start, overrides, member_since
          FROM jsonb_populate_recordset(NULL::debits, p_doc->'debits')
        ON CONFLICT (key_id, id) DO UPDATE SET refunded = EXCLUDED.refunded;
    END IF;
    IF p_doc ? 'reservations' THEN
        INSERT INTO reservations (key_id, id, pool, operation, quantity, amount, status, expires_at,
                                  plan_id, plan_version, drawn, metadata, debit_id, committed_amount,
                                  created_at, updated_at, source_key_id, overrides)
        SELECT key_id, id, pool, operation, quantity, amount, status, expires_at, plan_id,
               plan_version, drawn, metadata, debit_id, committed_amount, created_at, updated_at,
               source_key_id, overrides
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
    -- Settlements before new requests: a pack grant may settle a pool's request and a new one
    -- follow in the same transaction, and only one may be `requested` at a time.
    IF p_doc ? 'top_up_settlements' THEN
        UPDATE auto_top_ups t
           SET status = s.status, settled_at = s.settled_at, grant_id = s.grant_id,
               failure = s.failure, leased_until = NULL
          FROM jsonb_to_recordset(p_doc->'top_up_settlements')
               AS s (key_id text, id uuid, status text, settled_at timestamptz, grant_id uuid,
                     failure text)
         WHERE t.key_id = s.key_id AND t.id = s.id AND t.status = 'requested';
    END IF;
    IF p_doc ? 'auto_top_ups' THEN
        INSERT INTO auto_top_ups (key_id, id, pool, pack, credits, expires_in_days, price_amount,
                                  price_currency, period_start, available, status, created_at,
                                  next_attempt_at, settled_at, grant_id, failure)
        SELECT key_id, id, pool, pack, credits, expires_in_days, price_amount, price_currency,
               period_start, available, status, created_at, created_at, settled_at, grant_id,
               failure
          FROM jsonb_populate_recordset(NULL::auto_top_ups, p_doc->'auto_top_ups');
    END IF;
    IF p_doc ? 'members' THEN
        UPDATE members m
           SET period_start = x.period_start, used = x.used, updated_at = x.updated_at
          FROM jsonb_populate_recordset(NULL::members, p_doc->'members') x
         WHERE m.key_id = x.key_id AND m.member_key_id = x.member_key_id;
    END IF;
    IF p_doc ? 'alerts' THEN
        INSERT INTO pool_alerts (key_id, pool, period_start, thresholds_reached, thresholds_resolved,
                                 exhausted_at, low_at)
        SELECT key_id, pool, period_start, thresholds_reached, thresholds_resolved, exhausted_at,
               low_at
          FROM jsonb_populate_recordset(NULL::pool_alerts, p_doc->'alerts')
        ON CONFLICT (key_id, pool, period_start) DO UPDATE
           SET thresholds_reached = EXCLUDED.thresholds_reached,
               thresholds_resolved = EXCLUDED.thresholds_resolved,
               exhausted_at = EXCLUDED.exhausted_at,
               low_at = EXCLUDED.low_at;
    END IF;
END;
$$;
