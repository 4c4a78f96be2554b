-- The journal filtered by kind (`GET .../entries?kind=void`): without this index a rare kind
-- made the first page walk the whole account from its newest entry.
CREATE INDEX entries_by_kind ON entries (key_id, kind, id);
