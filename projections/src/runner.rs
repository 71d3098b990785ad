//! The projection runner: subscribe from the checkpoint, apply batches transactionally.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hub_events::{EventStore, HubEvent, Position, RecordedEvent, StoreError, Subscription};
use sqlx::AnyConnection;
use tokio::sync::watch;

use crate::db::{ReadModelDb, checkpoint_in, lock_in, set_checkpoint_in};
use crate::metrics::ProjectionMetrics;

/// A read model built from events.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the key of its checkpoint.
    fn name(&self) -> &'static str;

    /// Creates the tables it owns if they are missing.
    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error>;

    /// Drops the tables it owns (rebuild = drop, create, replay).
    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error>;

    /// Applies one decoded event inside the runner's transaction. Events the projection does not
    /// care about are ignored. Must not commit, and must not read outside `conn`.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        decoded: &HubEvent,
    ) -> Result<(), sqlx::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection {projection}: reading the log failed: {source}")]
    Store {
        projection: &'static str,
        source: StoreError,
    },
    #[error("projection {projection}: read-model database error at position {position}: {source}")]
    Database {
        projection: &'static str,
        position: Position,
        source: sqlx::Error,
    },
}

/// Applies the log to one projection.
#[derive(Clone)]
pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    db: ReadModelDb,
    projection: Arc<dyn Projection>,
    metrics: ProjectionMetrics,
    batch: usize,
    applied: Option<watch::Sender<Position>>,
}

/// Events applied after which the read-model statistics are refreshed (when caught up).
const STATISTICS_EVERY: usize = 10_000;

/// How often a transient read-model failure is retried before the runner gives up.
const RETRIES: u32 = 5;

impl ProjectionRunner {
    pub fn new(
        store: Arc<dyn EventStore>,
        db: ReadModelDb,
        projection: Arc<dyn Projection>,
        metrics: ProjectionMetrics,
    ) -> ProjectionRunner {
        ProjectionRunner {
            store,
            db,
            projection,
            metrics,
            batch: 1000,
            applied: None,
        }
    }

    /// Announces every applied position on `applied`, so a writer can wait until its own events
    /// are visible in this read model (read-your-writes), without polling.
    pub fn announce_applied(mut self, applied: watch::Sender<Position>) -> ProjectionRunner {
        self.applied = Some(applied);
        self
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn db_error(&self, position: Position) -> impl Fn(sqlx::Error) -> ProjectionError + '_ {
        move |source| ProjectionError::Database {
            projection: self.projection.name(),
            position,
            source,
        }
    }

    /// Creates the tables if needed and returns the stored checkpoint.
    pub async fn prepare(&self) -> Result<Position, ProjectionError> {
        create_tables(&self.db, self.projection.as_ref())
            .await
            .map_err(self.db_error(0))?;
        // Read apart from the creation: each batch reads it again under the projection's lock.
        let checkpoint = self
            .db
            .checkpoint(self.name())
            .await
            .map_err(self.db_error(0))?;
        if let Some(applied) = &self.applied {
            applied.send_replace(checkpoint);
        }
        self.metrics
            .position
            .with_label_values(&[self.name()])
            .set(checkpoint as i64);
        Ok(checkpoint)
    }

    /// Applies `events` and advances the checkpoint in one transaction. Events at or below the
    /// stored checkpoint are skipped, so a redelivered batch changes nothing.
    pub async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<Position, ProjectionError> {
        let first = events.first().map_or(0, |e| e.position);
        let err = self.db_error(first);
        let mut tx = self.db.begin_write().await.map_err(&err)?;
        lock_in(&mut tx, self.name()).await.map_err(&err)?;
        let checkpoint = checkpoint_in(&mut tx, self.name()).await.map_err(&err)?;
        let mut applied = 0;
        let mut dead = 0;
        let mut last = checkpoint;
        for event in events.iter().filter(|e| e.position > checkpoint) {
            match HubEvent::decode(event) {
                Ok(decoded) => {
                    self.projection
                        .apply(&mut tx, event, &decoded)
                        .await
                        .map_err(self.db_error(event.position))?;
                    applied += 1;
                }
                Err(reason) => {
                    tracing::error!(projection = self.name(), %reason, "undecodable event; recorded as a dead letter");
                    sqlx::query(
                        "INSERT INTO projection_dead_letters (projection, position, event_type, reason)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (projection, position) DO UPDATE
                         SET event_type = excluded.event_type, reason = excluded.reason",
                    )
                    .bind(self.name())
                    .bind(event.position as i64)
                    .bind(&event.event_type)
                    .bind(reason.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(self.db_error(event.position))?;
                    dead += 1;
                }
            }
            last = event.position;
        }
        if last > checkpoint {
            set_checkpoint_in(&mut tx, self.name(), last)
                .await
                .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)?;
        if let Some(applied) = &self.applied {
            applied.send_replace(last);
        }
        let name = [self.name()];
        self.metrics
            .position
            .with_label_values(&name)
            .set(last as i64);
        self.metrics
            .applied
            .with_label_values(&name)
            .inc_by(applied);
        self.metrics
            .dead_letters
            .with_label_values(&name)
            .inc_by(dead);
        Ok(last)
    }

    async fn apply_with_retry(
        &self,
        events: &[RecordedEvent],
    ) -> Result<Position, ProjectionError> {
        let mut attempt = 0;
        loop {
            match self.apply_batch(events).await {
                Ok(p) => return Ok(p),
                Err(e) if attempt < RETRIES => {
                    attempt += 1;
                    let wait = Duration::from_millis(100 << attempt);
                    tracing::warn!(error = %e, ?wait, "projection batch failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies everything up to `until` (at least) and returns; `progress` sees each new
    /// position. Used by rebuilds.
    pub async fn catch_up(
        &self,
        until: Position,
        mut progress: impl FnMut(Position),
    ) -> Result<Position, ProjectionError> {
        let mut position = self.prepare().await?;
        let mut subscription = Subscription::new(self.store.clone(), position);
        while position < until {
            let events = subscription
                .next_batch(self.batch)
                .await
                .map_err(|source| ProjectionError::Store {
                    projection: self.name(),
                    source,
                })?;
            position = self.apply_with_retry(&events).await?;
            progress(position);
        }
        Ok(position)
    }

    /// Follows the log until `shutdown` turns true: catch up from the checkpoint, then apply
    /// events as they are pushed.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ProjectionError> {
        let start = self.prepare().await?;
        tracing::info!(
            projection = self.name(),
            position = start,
            "projection started"
        );
        let mut subscription = Subscription::new(self.store.clone(), start);
        // Events applied since the planner's statistics were last refreshed.
        let mut unanalyzed = 0usize;
        loop {
            let events = tokio::select! {
                batch = subscription.next_batch(self.batch) => batch.map_err(|source| {
                    ProjectionError::Store { projection: self.name(), source }
                })?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            };
            self.apply_with_retry(&events).await?;
            unanalyzed += events.len();
            // Once caught up (a short batch) after many events, refresh the statistics the
            // query planner picks indexes with: without them a search by patient walks the date
            // index of every study.
            if unanalyzed >= STATISTICS_EVERY && events.len() < self.batch {
                unanalyzed = 0;
                if let Err(e) = self.db.refresh_statistics().await {
                    tracing::warn!(projection = self.name(), error = %e, "ANALYZE failed");
                }
            }
        }
    }
}

/// Creates `projection`'s tables if they are missing (a reader of a database that a projector in
/// another process fills, so its queries find the tables before the first event arrives).
pub async fn create_tables(
    db: &ReadModelDb,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    lock_in(&mut tx, projection.name()).await?;
    projection.create(&mut tx).await?;
    tx.commit().await
}

/// Drops and recreates the projection's tables, then replays the whole log into it.
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    db: ReadModelDb,
    projection: Arc<dyn Projection>,
    metrics: ProjectionMetrics,
    progress: impl FnMut(Position),
) -> Result<Position, ProjectionError> {
    let name = projection.name();
    let err = |source| ProjectionError::Database {
        projection: name,
        position: 0,
        source,
    };
    {
        let mut tx = db.begin_write().await.map_err(err)?;
        lock_in(&mut tx, name).await.map_err(err)?;
        projection.drop_tables(&mut tx).await.map_err(err)?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("DELETE FROM projection_dead_letters WHERE projection = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    let head = store
        .head()
        .await
        .map_err(|source| ProjectionError::Store {
            projection: name,
            source,
        })?;
    let runner = ProjectionRunner::new(store, db, projection, metrics);
    runner.catch_up(head, progress).await
}
