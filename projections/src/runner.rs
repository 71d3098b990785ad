//! The projection runner: subscribe from the checkpoint, apply batches transactionally.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hub_events::{EventStore, Family, HubEvent, Position, RecordedEvent, StoreError, Subscription};
use sqlx::AnyConnection;
use tokio::sync::watch;

use crate::db::{Part, ReadModelDb, lock_in, set_checkpoint_in, stored_in};
use crate::metrics::ProjectionMetrics;

/// A read model built from events.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the key of its checkpoint.
    fn name(&self) -> &'static str;

    /// The version of its tables' layout and of what [`Projection::apply`] writes into them,
    /// stored with its checkpoint. Bump it whenever either changes (a column added, dropped or
    /// renamed, a table or index reshaped, a value computed differently): when the projection
    /// starts with a version other than the stored one, the runner drops its tables, its
    /// checkpoint and its dead letters, creates the tables and replays the log from the start
    /// (see [`create_tables`]). Checkpoints stored before projections had versions count as 1.
    fn version(&self) -> u32 {
        1
    }

    /// Which database its tables and checkpoint live in.
    fn part(&self) -> Part {
        Part::Models
    }

    /// Creates the tables it owns if they are missing.
    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error>;

    /// Drops the tables it owns (rebuild = drop, create, replay).
    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error>;

    /// Whether events of `family` can change this read model: those of other families are not
    /// even decoded (an audit event listing a page of 100 studies is a JSON document of 8 KB).
    fn wants_family(&self, _family: Family) -> bool {
        true
    }

    /// Whether `event` can change this read model. A batch none of whose events is wanted is not
    /// written at all: the runner only moves its position, and stores it later (see
    /// [`CHECKPOINT_LAG`]). The audit event every search appends would otherwise cost each read
    /// model a write transaction, which also makes every reader of the file reload its cache.
    fn wants(&self, _event: &HubEvent) -> bool {
        true
    }

    /// How long a live batch may wait for more events before it is applied. Zero (the default):
    /// each batch as soon as it is appended, so a writer sees its own change at once. A read
    /// model whose every event touches many scattered rows, and that nobody waits on, applies
    /// fewer, larger transactions instead (see [`crate::AuditTrail`]).
    fn gather(&self) -> Duration {
        Duration::ZERO
    }

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
    /// Another process replaced the read model with another version of the projection since
    /// this runner prepared it: this one must not write through a layout it does not know.
    #[error(
        "projection {projection}: the read model is now at version {stored}, this process's is \
         {declared} (another process rebuilt it)"
    )]
    Version {
        projection: &'static str,
        stored: u32,
        declared: u32,
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

/// How long a position reached only through unwanted events may go unstored. Until then a
/// restart reads those events again (and skips them again); a reader of the stored checkpoints
/// (`hub run` readiness, a gateway following another process's projector) sees the projection
/// that much behind.
pub const CHECKPOINT_LAG: Duration = Duration::from_millis(500);

/// How a batch was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applied {
    /// Written, with the checkpoint, in one transaction.
    Stored(Position),
    /// Nothing in it was wanted: no transaction; the checkpoint is not yet moved.
    Skipped(Position),
}

impl Applied {
    fn position(self) -> Position {
        match self {
            Applied::Stored(p) | Applied::Skipped(p) => p,
        }
    }
}

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
            db: db.part(projection.part()),
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
    /// stored checkpoint are skipped, so a redelivered batch changes nothing. A batch with nothing
    /// this projection wants is not written, and its position is stored only by the next batch
    /// that is: see [`ProjectionRunner::store_checkpoint`].
    pub async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<Position, ProjectionError> {
        Ok(self.apply(events).await?.position())
    }

    async fn apply(&self, events: &[RecordedEvent]) -> Result<Applied, ProjectionError> {
        // `None`: of a family this projection does not want, so not decoded.
        let decoded: Vec<Option<Result<HubEvent, _>>> = events
            .iter()
            .map(|e| {
                self.projection
                    .wants_family(e.stream_id.family())
                    .then(|| HubEvent::decode(e))
            })
            .collect();
        let unwanted = |d: &Option<Result<HubEvent, _>>| match d {
            None => true,
            Some(Ok(d)) => !self.projection.wants(d),
            Some(Err(_)) => false,
        };
        if let Some(last) = events.last()
            && decoded.iter().all(unwanted)
        {
            self.announce(last.position, events.len() as u64, 0);
            return Ok(Applied::Skipped(last.position));
        }
        let first = events.first().map_or(0, |e| e.position);
        let err = self.db_error(first);
        let mut tx = self.db.begin_write().await.map_err(&err)?;
        lock_in(&mut tx, self.name()).await.map_err(&err)?;
        let checkpoint = self.checkpoint_in(&mut tx, first).await?;
        let mut applied = 0;
        let mut dead = 0;
        let mut last = checkpoint;
        for (event, decoded) in events
            .iter()
            .zip(decoded)
            .filter(|(e, _)| e.position > checkpoint)
        {
            match decoded {
                None => applied += 1,
                Some(Ok(decoded)) => {
                    if self.projection.wants(&decoded) {
                        self.projection
                            .apply(&mut tx, event, &decoded)
                            .await
                            .map_err(self.db_error(event.position))?;
                    }
                    applied += 1;
                }
                Some(Err(reason)) => {
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
            set_checkpoint_in(&mut tx, self.name(), last, self.projection.version())
                .await
                .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)?;
        self.announce(last, applied, dead);
        Ok(Applied::Stored(last))
    }

    /// The stored checkpoint, read in `tx` under the projection's lock, provided it was stored by
    /// this runner's version of the projection (`at`: the position the error names).
    async fn checkpoint_in(
        &self,
        tx: &mut AnyConnection,
        at: Position,
    ) -> Result<Position, ProjectionError> {
        match stored_in(tx, self.name())
            .await
            .map_err(self.db_error(at))?
        {
            None => Ok(0),
            Some((position, stored)) if stored == self.projection.version() => Ok(position),
            Some((_, stored)) => Err(ProjectionError::Version {
                projection: self.name(),
                stored,
                declared: self.projection.version(),
            }),
        }
    }

    /// Tells the metrics, and whoever waits on this read model, that it has reached `position`
    /// (never backwards: a redelivered batch may end below what was announced).
    fn announce(&self, position: Position, applied: u64, dead: u64) {
        if let Some(tx) = &self.applied {
            tx.send_if_modified(|at| {
                let newer = position > *at;
                if newer {
                    *at = position;
                }
                newer
            });
        }
        let name = [self.name()];
        let gauge = self.metrics.position.with_label_values(&name);
        gauge.set(gauge.get().max(position as i64));
        self.metrics
            .applied
            .with_label_values(&name)
            .inc_by(applied);
        self.metrics
            .dead_letters
            .with_label_values(&name)
            .inc_by(dead);
    }

    /// Stores `position` as the checkpoint (reached through events this projection does not
    /// want), unless the stored one is already further.
    pub async fn store_checkpoint(&self, position: Position) -> Result<(), ProjectionError> {
        let err = self.db_error(position);
        let mut tx = self.db.begin_write().await.map_err(&err)?;
        lock_in(&mut tx, self.name()).await.map_err(&err)?;
        if self.checkpoint_in(&mut tx, position).await? < position {
            set_checkpoint_in(&mut tx, self.name(), position, self.projection.version())
                .await
                .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)
    }

    async fn apply_with_retry(&self, events: &[RecordedEvent]) -> Result<Applied, ProjectionError> {
        retry("projection batch", || self.apply(events)).await
    }

    async fn store_with_retry(&self, position: Position) -> Result<(), ProjectionError> {
        retry("storing a checkpoint", || self.store_checkpoint(position)).await
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
        let mut unstored = false;
        while position < until {
            let events = subscription
                .next_batch(self.batch)
                .await
                .map_err(|source| ProjectionError::Store {
                    projection: self.name(),
                    source,
                })?;
            let applied = self.apply_with_retry(&events).await?;
            unstored = matches!(applied, Applied::Skipped(_));
            position = applied.position();
            progress(position);
        }
        if unstored {
            self.store_checkpoint(position).await?;
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
        // A position reached through skipped batches only, and when it must be stored by.
        let mut unstored: Option<(Position, tokio::time::Instant)> = None;
        loop {
            let due = async {
                match unstored {
                    Some((_, by)) => tokio::time::sleep_until(by).await,
                    None => std::future::pending().await,
                }
            };
            let mut events = tokio::select! {
                batch = subscription.next_batch(self.batch) => batch.map_err(|source| {
                    ProjectionError::Store { projection: self.name(), source }
                })?,
                () = due => {
                    if let Some((position, _)) = unstored.take() {
                        self.store_with_retry(position).await?;
                    }
                    continue;
                }
                // Only the fact: the guard `wait_for` returns must not live across an await.
                _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => {
                    if let Some((position, _)) = unstored {
                        self.store_with_retry(position).await?;
                    }
                    return Ok(());
                }
            };
            self.gather_more(&mut subscription, &mut events, &mut shutdown)
                .await?;
            unstored = match self.apply_with_retry(&events).await? {
                Applied::Stored(_) => None,
                Applied::Skipped(p) => Some((
                    p,
                    unstored.map_or_else(|| tokio::time::Instant::now() + CHECKPOINT_LAG, |u| u.1),
                )),
            };
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

    /// Adds to a short batch what else is appended within the projection's
    /// [`Projection::gather`] time (up to a full batch), or until shutdown.
    async fn gather_more(
        &self,
        subscription: &mut Subscription,
        events: &mut Vec<RecordedEvent>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        let gather = self.projection.gather();
        if gather.is_zero() || events.len() >= self.batch {
            return Ok(());
        }
        let until = tokio::time::Instant::now() + gather;
        while events.len() < self.batch {
            // `next_batch` only moves the subscription once it returns: a batch cut off here is
            // read again next time.
            tokio::select! {
                more = subscription.next_batch(self.batch - events.len()) => {
                    events.extend(more.map_err(|source| ProjectionError::Store {
                        projection: self.name(),
                        source,
                    })?);
                }
                () = tokio::time::sleep_until(until) => break,
                _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
            }
        }
        Ok(())
    }
}

/// Runs `attempt` until it succeeds, up to [`RETRIES`] more times, waiting longer each time: the
/// read-model database may be restarting.
async fn retry<T, F: Future<Output = Result<T, ProjectionError>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, ProjectionError> {
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(t) => return Ok(t),
            // Retrying cannot bring the stored version back.
            Err(e @ ProjectionError::Version { .. }) => return Err(e),
            Err(e) if tries < RETRIES => {
                tries += 1;
                let wait = Duration::from_millis(100 << tries);
                tracing::warn!(error = %e, ?wait, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates `projection`'s tables if they are missing (a reader of a database that a projector in
/// another process fills, so its queries find the tables before the first event arrives).
///
/// If the stored checkpoint was written by another [`Projection::version`], the tables are
/// dropped with the checkpoint and the dead letters first, so the runner replays the log from
/// the start into the new ones. A projection without a stored checkpoint has applied nothing
/// (every write stores one), so its tables, if any, are empty and possibly of an older layout:
/// they are dropped too. All of it happens in one transaction under the projection's lock, so
/// of several processes starting at once (projector replicas, gateways) one does it and the
/// others find the new version stored.
pub async fn create_tables(
    db: &ReadModelDb,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let mut tx = db.part(projection.part()).begin_write().await?;
    lock_in(&mut tx, projection.name()).await?;
    let (name, declared) = (projection.name(), projection.version());
    match stored_in(&mut tx, name).await? {
        Some((_, stored)) if stored == declared => {}
        Some((position, stored)) => {
            tracing::info!(
                projection = name,
                stored,
                declared,
                position,
                "projection {name}: version {stored} stored, {declared} declared: its tables are \
                 dropped and the log replayed from the start"
            );
            reset_in(&mut tx, projection).await?;
        }
        None => reset_in(&mut tx, projection).await?,
    }
    projection.create(&mut tx).await?;
    tx.commit().await
}

/// Drops `projection`'s tables, checkpoint and dead letters, and stores position 0 with its
/// version (the caller holds its lock and creates the tables again).
async fn reset_in(
    conn: &mut AnyConnection,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let name = projection.name();
    projection.drop_tables(conn).await?;
    for table in ["projection_checkpoints", "projection_dead_letters"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE projection = $1"))
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    set_checkpoint_in(conn, name, 0, projection.version()).await
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
        let mut tx = db
            .part(projection.part())
            .begin_write()
            .await
            .map_err(err)?;
        lock_in(&mut tx, name).await.map_err(err)?;
        reset_in(&mut tx, projection.as_ref()).await.map_err(err)?;
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
