//! The event store: append with optimistic concurrency, read a stream, read everything in global
//! order. Two implementations through sqlx: SQLite (embedded default) and PostgreSQL.
//!
//! Every implementation keeps one invariant that makes catch-up reading simple and safe:
//! **positions become visible in order**. An append that commits position `p` is visible only
//! after every position below `p` is. Readers may therefore trust "everything after the last
//! position I saw" without ever skipping a late commit. SQLite gets this from its single writer;
//! PostgreSQL from a counter row that every append locks until it commits (see `postgres.rs`).

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;

use crate::bus::Bus;
use crate::envelope::{NewEvent, Position, RecordedEvent, StreamId};

/// What the writer believes the stream's version is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (versions start at 1).
    Exact(u64),
}

impl ExpectedVersion {
    fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream (0)"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// The outcome of a successful append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Global position of the first appended event.
    pub first_position: Position,
    /// Global position of the last appended event.
    pub last_position: Position,
    /// Stream version after the append.
    pub stream_version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "version conflict on stream {stream}: expected version {expected}, actual version {actual}; nothing was appended"
    )]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("nothing to append to stream {0}")]
    EmptyAppend(StreamId),
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: Position, reason: String },
    #[error("event store database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the event store was closed")]
    Closed,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically, if the stream is at `expected`.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads up to `limit` events of one stream with version ≥ `from_version`, in version order.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events with position > `after`, in global order.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last committed event (0 for an empty log).
    async fn head(&self) -> Result<Position, StoreError>;

    /// The last position the outbox relay `relay` has published and seen acknowledged (0 if it
    /// never ran).
    async fn published(&self, relay: &str) -> Result<Position, StoreError>;

    /// Records that `relay` has published everything up to `position`. Never moves backwards.
    async fn set_published(&self, relay: &str, position: Position) -> Result<(), StoreError>;

    /// Waits for the exclusive section `name` across every process that uses this log, for a
    /// check-then-append that must not interleave with another process's (consultation
    /// booking). Released when the guard drops. PostgreSQL: a transaction-scoped advisory lock
    /// (a crashed holder's connection ends, and the lock with it), waited for at most 10 s.
    /// SQLite: one process owns the file, so the caller's in-process lock is all there is.
    async fn exclusive(&self, name: &str) -> Result<ExclusiveGuard, StoreError> {
        let _ = name;
        Ok(ExclusiveGuard::default())
    }

    /// The in-process transport on which committed appends are announced.
    fn bus(&self) -> &Bus;

    /// `sqlite` or `postgres`, for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// Holds an exclusive section of `EventStore::exclusive` until dropped.
#[derive(Default)]
pub struct ExclusiveGuard {
    _held: Option<Box<dyn std::any::Any + Send>>,
}

impl ExclusiveGuard {
    pub(crate) fn holding(held: Box<dyn std::any::Any + Send>) -> ExclusiveGuard {
        ExclusiveGuard { _held: Some(held) }
    }
}

/// Chunk size of multi-row inserts: keeps every statement far below the bind-parameter limits of
/// SQLite (32766) and PostgreSQL (65535) with the 11 columns an event has.
pub(crate) const INSERT_CHUNK: usize = 1000;
