-- The ledger's kinds and statuses are enums in Rust (src/ledger/types.rs) and are stored as such.
-- Indexes whose predicates compare a converted column are dropped first and made again after.

CREATE TYPE grant_kind AS ENUM
    ('allowance', 'rollover', 'pack', 'promotional', 'adjustment', 'refund');
CREATE TYPE entry_kind AS ENUM
    ('grant', 'debit', 'hold', 'release', 'expiration', 'void', 'refund', 'adjustment', 'overage');
CREATE TYPE reservation_status AS ENUM ('active', 'committed', 'released', 'expired');
CREATE TYPE adjustment_op AS ENUM ('set', 'increment', 'decrement');

DROP INDEX grants_one_allowance_per_period;
DROP INDEX reservations_expiring;
DROP INDEX reservations_active_by_account;

ALTER TABLE grants DROP CONSTRAINT grants_kind_check,
    ALTER COLUMN kind TYPE grant_kind USING kind::grant_kind;
ALTER TABLE entries DROP CONSTRAINT entries_kind_check,
    ALTER COLUMN kind TYPE entry_kind USING kind::entry_kind;
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check,
    ALTER COLUMN status TYPE reservation_status USING status::reservation_status;
ALTER TABLE adjustments DROP CONSTRAINT adjustments_op_check,
    ALTER COLUMN op TYPE adjustment_op USING op::adjustment_op;

-- At most one allowance grant per account, pool and period.
CREATE UNIQUE INDEX grants_one_allowance_per_period
    ON grants (key_id, pool, period_start) WHERE kind = 'allowance';
-- Active holds past their TTL, for the scheduler and for the lazy release of one account.
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'active';
CREATE INDEX reservations_active_by_account ON reservations (key_id, expires_at)
    WHERE status = 'active';
