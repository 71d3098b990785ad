-- The global log. `position` is the global order; (stream_id, stream_version) the order within
-- one aggregate. AUTOINCREMENT: a position is never reused, even after the last row is deleted.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    recorded_at_us  INTEGER NOT NULL,
    tenant          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT,
    UNIQUE (stream_id, stream_version)
);
