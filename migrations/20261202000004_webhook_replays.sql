-- The stored answer of an endpoint's creation (for replays with its Idempotency-Key) no longer
-- keeps a copy of the endpoint's signing secret: a replay takes the secret from the endpoint, and
-- answers 404 once the endpoint has been deleted. Copies stored before are removed.
UPDATE idempotency_keys
   SET response = response - 'secret'
 WHERE scope = 'route:POST /v1/webhook-endpoints' AND response ? 'secret';
