-- The global log. `position` is the global order; (stream_id, stream_version) the order within
-- one aggregate.
CREATE TABLE events (
    position        BIGINT      PRIMARY KEY,
    event_id        UUID        NOT NULL UNIQUE,
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSON        NOT NULL, -- json, not jsonb: the stored text stays byte-exact
    recorded_at     TIMESTAMPTZ NOT NULL,
    tenant          TEXT        NOT NULL,
    actor           TEXT        NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID,
    UNIQUE (stream_id, stream_version)
);

-- The head of the log. Every append locks this one row (UPDATE) and holds the lock until it
-- commits, so positions are handed out and made visible strictly in order: a reader that has
-- seen position p can never later find a committed position below p. A sequence would not give
-- that (its values commit out of order) and catch-up readers would skip late commits.
CREATE TABLE log_head (
    id        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    position  BIGINT  NOT NULL
);
INSERT INTO log_head (id, position) VALUES (TRUE, 0);
