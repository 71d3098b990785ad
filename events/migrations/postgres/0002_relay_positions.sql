-- The outbox relay's progress: the last position it has published to the transport and seen
-- acknowledged. After a crash it republishes from here (duplicates possible, never a loss).
CREATE TABLE relay_positions (
    relay     TEXT   PRIMARY KEY,
    position  BIGINT NOT NULL
);
