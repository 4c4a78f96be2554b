-- The money rules moved to the account state machine in Rust (src/ledger): the SQL functions that
-- decided debits, thresholds and refusals go. SQL keeps storage, constraints and the append-only
-- journal trigger. What replaces them here is storage only: one function that loads and row-locks
-- the states of a set of accounts in one round trip.

DROP FUNCTION cl_debit(text, text, bigint, text, bigint, text, integer, jsonb, boolean, text, text,
                       uuid, text, timestamptz);
DROP FUNCTION cl_debit_apply(text, text, bigint, text, bigint, text, integer, jsonb, boolean, uuid,
                             text, timestamptz);
DROP FUNCTION cl_announce_thresholds(text, text, text, integer, timestamptz, timestamptz, bigint,
                                     bigint, bigint, bigint, timestamptz);
DROP FUNCTION cl_announce_exhausted(text, text, timestamptz, jsonb, timestamptz);
DROP FUNCTION cl_usage_add(text, text, text, text, timestamptz, bigint);
DROP FUNCTION cl_emit(text, text, jsonb, timestamptz);

-- Idempotency records of the ledger are written with their answer, in the transaction of the
-- work, under the account's lock: status is 1 for them. Status 0 still marks a claim in progress
-- for account-less routes (webhook endpoints), which claim first and finish later.
COMMENT ON COLUMN idempotency_keys.status IS
    '0 while a claim is in progress; any other value: the stored response is final';

-- The states of the accounts named by key, and of those owning the named reservations, debits
-- and grants, as one JSON document per account: the account, the latest version of its plan, its
-- pools, the grants in play (active or still changing, and those that its holds and the named
-- debits drew from), its active holds and the named reservations, the named debits with their
-- refunds, the named idempotency records, and this period's alerts.
--
-- With p_lock the accounts are row-locked first, in key order, so that two batches never wait on
-- each other in a cycle; with p_skip_locked too, accounts locked elsewhere are left out. The state is read by a second statement, which sees everything that
-- committed while the first waited for the locks.
CREATE FUNCTION ledger_load_states(
    p_keys text[], p_reservations uuid[], p_debits uuid[], p_grants uuid[],
    p_idempotency_keys text[], p_lock boolean, p_skip_locked boolean)
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
                                     AND (g.remaining > 0 OR g.expires_at IS NULL
                                          OR g.expires_at > a.period_start))
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
