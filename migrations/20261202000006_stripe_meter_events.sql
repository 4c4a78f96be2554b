-- Overage reported to Stripe as meter events (DESIGN section 5), through an outbox written in the
-- transaction that journals the overage: a trigger on the append-only journal adds a row for
-- each `overage` entry of an account linked to a Stripe customer (`metadata.stripe_customer_id`):
-- a debit's overage (a negative entry: the value reported is positive), and overage paid back by
-- a refund (a positive entry with `refund_id`: reported as a negative value, Stripe's documented
-- correction). The period roll's `settled` entry only records the period's total and is not
-- reported. A worker sends due rows with retries; each row's identifier makes Stripe drop a
-- repeat.
CREATE TABLE stripe_meter_events (
    key_id          text NOT NULL,
    entry_id        bigint NOT NULL,
    customer        text NOT NULL,
    value           bigint NOT NULL CHECK (value <> 0),
    occurred_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    leased_until    timestamptz,
    last_error      text,
    sent_at         timestamptz,
    PRIMARY KEY (key_id, entry_id)
);

CREATE INDEX stripe_meter_events_due ON stripe_meter_events (next_attempt_at)
    WHERE status = 'pending';

CREATE FUNCTION cl_stripe_meter_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stripe_meter_events (key_id, entry_id, customer, value, occurred_at,
                                     next_attempt_at)
    SELECT NEW.key_id, NEW.id, a.metadata->>'stripe_customer_id', -NEW.amount, NEW.created_at,
           NEW.created_at
      FROM accounts a
     WHERE a.key_id = NEW.key_id
       AND jsonb_typeof(a.metadata->'stripe_customer_id') = 'string';
    RETURN NULL;
END;
$$;

CREATE TRIGGER entries_stripe_meter_outbox
    AFTER INSERT ON entries
    FOR EACH ROW
    WHEN (NEW.kind = 'overage' AND NEW.amount <> 0 AND NOT (NEW.metadata ? 'settled'))
    EXECUTE FUNCTION cl_stripe_meter_outbox();
