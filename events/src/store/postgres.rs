//! The distributed-mode event store: PostgreSQL.
//!
//! Ordering: every append first locks the single `log_head` row (`UPDATE ... RETURNING`), takes
//! its positions from it, and holds the lock until COMMIT. Appends therefore commit in position
//! order and a catch-up reader that trusts "after the last position I saw" never skips an event
//! (DESIGN.md, pitfall 1). The price is one append transaction at a time; batching is how a
//! writer goes fast, and `hub bench events` measures both.
//!
//! Appends from other processes are announced with `NOTIFY hub_events, '<head>'` (delivered at
//! commit) and turned into [`BusMessage::HeadMoved`] for local subscribers.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{AppendResult, EventStore, ExclusiveGuard, ExpectedVersion, INSERT_CHUNK, StoreError};
use crate::bus::{Bus, BusMessage};
use crate::envelope::{EventMetadata, NewEvent, Position, RecordedEvent, StreamId};
use crate::metrics::StoreMetrics;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const NOTIFY_CHANNEL: &str = "hub_events";

pub struct PostgresEventStore {
    pool: PgPool,
    bus: Bus,
    metrics: StoreMetrics,
    listener: Option<tokio::task::JoinHandle<()>>,
}

const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, \
                       schema_version, payload::text AS payload, recorded_at, tenant, actor, \
                       correlation_id, causation_id";

impl PostgresEventStore {
    /// Connects, applies migrations, and (with `listen`) follows appends of other processes.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        listen: bool,
        metrics: StoreMetrics,
    ) -> Result<PostgresEventStore, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let bus = Bus::default();
        let listener = if listen {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            let bus = bus.clone();
            Some(tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(n) => match n.payload().parse::<u64>() {
                            Ok(head) => bus.publish(BusMessage::HeadMoved(head)),
                            Err(_) => tracing::warn!(payload = n.payload(), "odd NOTIFY payload"),
                        },
                        // PgListener reconnects by itself; a subscriber that missed a NOTIFY
                        // meanwhile catches up on the next one.
                        Err(e) => {
                            tracing::warn!(error = %e, "event NOTIFY listener error; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }))
        } else {
            None
        };
        Ok(PostgresEventStore {
            pool,
            bus,
            metrics,
            listener,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Drop for PostgresEventStore {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
        }
    }
}

fn row_to_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get("position")?;
    let stream: String = row.try_get("stream_id")?;
    let stream_id = StreamId::parse(&stream).map_err(|e| StoreError::Corrupt {
        position: position as u64,
        reason: e.to_string(),
    })?;
    let stream_version: i64 = row.try_get("stream_version")?;
    let schema_version: i32 = row.try_get("schema_version")?;
    Ok(RecordedEvent {
        position: position as u64,
        event_id: row.try_get("event_id")?,
        stream_id,
        stream_version: stream_version as u64,
        event_type: row.try_get("event_type")?,
        schema_version: schema_version as u32,
        payload: row.try_get("payload")?,
        recorded_at: row.try_get("recorded_at")?,
        metadata: EventMetadata {
            tenant: row.try_get("tenant")?,
            actor: row.try_get("actor")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get::<Option<Uuid>, _>("causation_id")?,
        },
    })
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend(stream.clone()));
        }
        let started = Instant::now();
        let n = events.len() as i64;
        let mut tx = self.pool.begin().await?;
        // Lock the head row first: from here until COMMIT no other append can take positions.
        let head: i64 =
            sqlx::query_scalar("UPDATE log_head SET position = position + $1 RETURNING position")
                .bind(n)
                .fetch_one(&mut *tx)
                .await?;
        let first_position = (head - n + 1) as u64;
        let actual: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let actual = actual as u64;
        if !expected.admits(actual) {
            tx.rollback().await?;
            self.metrics.append_conflicts.inc();
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let recorded_at = Utc::now();
        let recorded: Vec<RecordedEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| RecordedEvent {
                position: first_position + i as u64,
                event_id: e.event_id,
                stream_id: stream.clone(),
                stream_version: actual + i as u64 + 1,
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                // PostgreSQL keeps microseconds: make the pushed copy equal the stored one.
                recorded_at: DateTime::from_timestamp_micros(recorded_at.timestamp_micros())
                    .unwrap_or(recorded_at),
                metadata: e.metadata,
            })
            .collect();
        for chunk in recorded.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
                 schema_version, payload, recorded_at, tenant, actor, correlation_id, \
                 causation_id) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(e.position as i64)
                    .push_bind(e.event_id)
                    .push_bind(e.stream_id.as_str())
                    .push_bind(e.stream_version as i64)
                    .push_bind(e.event_type.as_str())
                    .push_bind(e.schema_version as i32)
                    .push_bind(e.payload.as_str())
                    .push_unseparated("::json")
                    .push_bind(e.recorded_at)
                    .push_bind(e.metadata.tenant.as_str())
                    .push_bind(e.metadata.actor.as_str())
                    .push_bind(e.metadata.correlation_id)
                    .push_bind(e.metadata.causation_id);
            });
            qb.build().execute(&mut *tx).await?;
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(head.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let result = AppendResult {
            first_position,
            last_position: head as u64,
            stream_version: actual + n as u64,
        };
        self.metrics
            .record_append(&recorded, started.elapsed().as_secs_f64());
        self.bus.publish(BusMessage::Appended(recorded.into()));
        Ok(result)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 \
             ORDER BY stream_version LIMIT $3"
        ))
        .bind(stream.as_str())
        .bind(from_version as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
            .fetch_one(&self.pool)
            .await?;
        Ok(head as u64)
    }

    async fn published(&self, relay: &str) -> Result<Position, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM relay_positions WHERE relay = $1")
                .bind(relay)
                .fetch_optional(&self.pool)
                .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    async fn set_published(&self, relay: &str, position: Position) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO relay_positions (relay, position) VALUES ($1, $2)
             ON CONFLICT (relay) DO UPDATE SET position = excluded.position
             WHERE relay_positions.position < excluded.position",
        )
        .bind(relay)
        .bind(position as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn exclusive(&self, name: &str) -> Result<ExclusiveGuard, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '10s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        // Dropping the transaction rolls it back, which releases the lock.
        Ok(ExclusiveGuard::holding(Box::new(tx)))
    }

    fn bus(&self) -> &Bus {
        &self.bus
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
