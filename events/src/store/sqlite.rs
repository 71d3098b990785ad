//! The embedded event store: one SQLite file in WAL mode.
//!
//! All appends go through one writer connection (SQLite has one writer anyway), so positions are
//! assigned and committed in order, and the bus announces them in order. Reads use a separate
//! pool and run concurrently with the writer.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{AppendResult, EventStore, ExpectedVersion, INSERT_CHUNK, StoreError};
use crate::bus::{Bus, BusMessage};
use crate::envelope::{EventMetadata, NewEvent, Position, RecordedEvent, StreamId};
use crate::metrics::StoreMetrics;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How hard SQLite pushes each commit to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSync {
    /// fsync the WAL on every commit: an acknowledged append survives a power cut.
    Full,
    /// fsync at checkpoints only: an acknowledged append survives a crash of the process, but the
    /// last commits may be lost on a power cut. Faster for small appends.
    Normal,
}

impl FromStr for SqliteSync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(SqliteSync::Full),
            "normal" => Ok(SqliteSync::Normal),
            _ => Err(format!("expected `full` or `normal`, got {s:?}")),
        }
    }
}

pub struct SqliteEventStore {
    writer: Mutex<SqliteConnection>,
    readers: SqlitePool,
    bus: Bus,
    metrics: StoreMetrics,
    /// Commits since the background checkpointer last ran; dropping `_stop` ends it.
    commits: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// How often the background checkpointer looks for committed WAL frames to copy.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, schema_version, \
                       payload, recorded_at_us, tenant, actor, correlation_id, causation_id";

impl SqliteEventStore {
    /// Opens (creating if needed) the log at `path` and applies migrations.
    pub async fn open(
        path: &Path,
        sync: SqliteSync,
        metrics: StoreMetrics,
    ) -> Result<SqliteEventStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-65536")
            // No commit copies the WAL into the database itself (SQLite's default does it in the
            // commit that crosses 1,000 pages, which then waits for two more fsyncs): the
            // background checkpointer below does, beside the appends.
            .pragma("wal_autocheckpoint", "0");
        let mut writer = SqliteConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        // 1, not 0: frames an earlier process left in the WAL (one that stopped before its last
        // round, or a bulk writer that outran it) are copied in the first round after opening,
        // not in the round after the first append, which would put a copy of up to gigabytes
        // beside the first requests served (a 3 GB WAL left by `hub bench ingest`'s history
        // writer was copied while QIDO-RS was being timed).
        let commits = Arc::new(AtomicU64::new(1));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(checkpointer(readers.clone(), commits.clone(), stopped));
        Ok(SqliteEventStore {
            writer: Mutex::new(writer),
            readers,
            bus: Bus::default(),
            metrics,
            commits,
            _stop: stop,
        })
    }

    /// Direct access for tests and tools that must look below the trait (e.g. to plant a corrupt
    /// row and check that readers report it).
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.readers
    }

    async fn append_in_tx(
        conn: &mut SqliteConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        recorded_at: DateTime<Utc>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let actual: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?",
        )
        .bind(stream.as_str())
        .fetch_one(&mut *conn)
        .await?;
        let actual = actual as u64;
        if !expected.admits(actual) {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let recorded_us = recorded_at.timestamp_micros();
        let mut recorded = Vec::with_capacity(events.len());
        for (chunk_index, chunk) in events.chunks(INSERT_CHUNK).enumerate() {
            let base = actual + (chunk_index * INSERT_CHUNK) as u64;
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO events (event_id, stream_id, stream_version, event_type, \
                 schema_version, payload, recorded_at_us, tenant, actor, correlation_id, \
                 causation_id) ",
            );
            qb.push_values(chunk.iter().enumerate(), |mut b, (i, e)| {
                b.push_bind(e.event_id.to_string())
                    .push_bind(stream.as_str())
                    .push_bind((base + i as u64 + 1) as i64)
                    .push_bind(e.event_type.as_str())
                    .push_bind(e.schema_version as i64)
                    .push_bind(e.payload.as_str())
                    .push_bind(recorded_us)
                    .push_bind(e.metadata.tenant.as_str())
                    .push_bind(e.metadata.actor.as_str())
                    .push_bind(e.metadata.correlation_id.to_string())
                    .push_bind(e.metadata.causation_id.map(|c| c.to_string()));
            });
            qb.push(" RETURNING position");
            let positions: Vec<i64> = qb.build_query_scalar().fetch_all(&mut *conn).await?;
            for ((i, e), position) in chunk.iter().enumerate().zip(positions) {
                recorded.push(RecordedEvent {
                    position: position as u64,
                    event_id: e.event_id,
                    stream_id: stream.clone(),
                    stream_version: base + i as u64 + 1,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    payload: e.payload.clone(),
                    recorded_at: DateTime::from_timestamp_micros(recorded_us)
                        .unwrap_or(recorded_at),
                    metadata: e.metadata.clone(),
                });
            }
        }
        recorded.sort_by_key(|e| e.position);
        Ok(recorded)
    }
}

/// Copies committed WAL frames into the database file (a PASSIVE checkpoint: it never blocks an
/// append, and an append never waits for it) every [`CHECKPOINT_EVERY`] in which something was
/// committed, until the store is dropped. Once all frames are copied, the next append starts
/// the WAL over from its beginning, so it stays as small as half a second of appends.
async fn checkpointer(
    pool: SqlitePool,
    commits: Arc<AtomicU64>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if commits.swap(0, Ordering::AcqRel) == 0 {
            continue;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            // The frames stay in the WAL, readable; the next round tries again.
            tracing::warn!(error = %e, "event log: WAL checkpoint failed");
            commits.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// One stored row, as read either column by column or from a JSON batch.
#[derive(serde::Deserialize)]
struct RawRow(
    i64,            // position
    String,         // event_id
    String,         // stream_id
    i64,            // stream_version
    String,         // event_type
    i64,            // schema_version
    String,         // payload
    i64,            // recorded_at_us
    String,         // tenant
    String,         // actor
    String,         // correlation_id
    Option<String>, // causation_id
);

fn row_to_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    raw_to_event(RawRow(
        row.try_get("position")?,
        row.try_get("event_id")?,
        row.try_get("stream_id")?,
        row.try_get("stream_version")?,
        row.try_get("event_type")?,
        row.try_get("schema_version")?,
        row.try_get("payload")?,
        row.try_get("recorded_at_us")?,
        row.try_get("tenant")?,
        row.try_get("actor")?,
        row.try_get("correlation_id")?,
        row.try_get("causation_id")?,
    ))
}

fn raw_to_event(raw: RawRow) -> Result<RecordedEvent, StoreError> {
    let RawRow(
        position,
        event_id,
        stream,
        stream_version,
        event_type,
        schema_version,
        payload,
        recorded_us,
        tenant,
        actor,
        correlation_id,
        causation_id,
    ) = raw;
    let position = position as u64;
    let corrupt = |what: &str, detail: String| StoreError::Corrupt {
        position,
        reason: format!("{what}: {detail}"),
    };
    let uuid = |col: &str, s: &str| -> Result<Uuid, StoreError> {
        Uuid::parse_str(s).map_err(|e| corrupt(col, format!("{s:?} is not a UUID ({e})")))
    };
    let stream_id = StreamId::parse(&stream).map_err(|e| corrupt("stream_id", e.to_string()))?;
    let causation_id = match causation_id {
        None => None,
        Some(s) => Some(uuid("causation_id", &s)?),
    };
    Ok(RecordedEvent {
        position,
        event_id: uuid("event_id", &event_id)?,
        stream_id,
        stream_version: stream_version as u64,
        event_type,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt("schema_version", schema_version.to_string()))?,
        payload,
        recorded_at: DateTime::from_timestamp_micros(recorded_us)
            .ok_or_else(|| corrupt("recorded_at_us", recorded_us.to_string()))?,
        metadata: EventMetadata {
            tenant,
            actor,
            correlation_id: uuid("correlation_id", &correlation_id)?,
            causation_id,
        },
    })
}

impl SqliteEventStore {
    /// Reads a page of the log as ONE row holding a JSON array of rows. sqlx hands SQLite rows
    /// from its worker thread to the runtime one at a time, which caps row-by-row reads near
    /// 100k rows/s; one aggregated row per page lifts catch-up reads well above that.
    async fn read_all_batched(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Option<Vec<RawRow>>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(&format!(
            "SELECT json_group_array(json_array({COLUMNS}) ORDER BY position) FROM \
             (SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?)"
        ))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_one(&self.readers)
        .await
        .ok();
        // Anything odd (a row JSON cannot hold, a column of the wrong type) falls back to the
        // row-by-row read, which reports the offending position precisely.
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
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
        let mut conn = self.writer.lock().await;
        // IMMEDIATE takes the write lock now, so another process's writer cannot sneak in
        // between our version check and our insert.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let outcome = Self::append_in_tx(&mut conn, stream, expected, &events, Utc::now()).await;
        let recorded = match outcome {
            Ok(recorded) => {
                if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(e.into());
                }
                self.commits.fetch_add(1, Ordering::AcqRel);
                recorded
            }
            Err(e) => {
                sqlx::query("ROLLBACK").execute(&mut *conn).await?;
                if matches!(e, StoreError::Conflict { .. }) {
                    self.metrics.append_conflicts.inc();
                }
                return Err(e);
            }
        };
        let result = AppendResult {
            first_position: recorded[0].position,
            last_position: recorded[recorded.len() - 1].position,
            stream_version: recorded[recorded.len() - 1].stream_version,
        };
        self.metrics
            .record_append(&recorded, started.elapsed().as_secs_f64());
        // Published while still holding the writer lock: pushes go out in position order.
        self.bus.publish(BusMessage::Appended(recorded.into()));
        drop(conn);
        Ok(result)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? \
             ORDER BY stream_version LIMIT ?"
        ))
        .bind(stream.as_str())
        .bind(from_version as i64)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if let Some(rows) = self.read_all_batched(after, limit).await? {
            return rows.into_iter().map(raw_to_event).collect();
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.readers)
            .await?;
        Ok(head as u64)
    }

    async fn published(&self, relay: &str) -> Result<Position, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM relay_positions WHERE relay = ?")
                .bind(relay)
                .fetch_optional(&self.readers)
                .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    async fn set_published(&self, relay: &str, position: Position) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO relay_positions (relay, position) VALUES (?, ?)
             ON CONFLICT (relay) DO UPDATE SET position = excluded.position
             WHERE relay_positions.position < excluded.position",
        )
        .bind(relay)
        .bind(position as i64)
        .execute(&mut *self.writer.lock().await)
        .await?;
        self.commits.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn bus(&self) -> &Bus {
        &self.bus
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
