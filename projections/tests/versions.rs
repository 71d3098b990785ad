//! Projection versions: a projection declares the version of its tables' layout and of what it
//! writes, stored with its checkpoint; one that starts with another version is dropped and
//! replayed from the start, one with the same version carries on from its checkpoint. On SQLite
//! and on PostgreSQL (`HUB_TEST_POSTGRES_URL`, the throwaway server `tests/run.sh` starts).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use hub_events::catalog::StudyEvent;
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, Position, RecordedEvent,
    SqliteEventStore, SqliteSync, StoreMetrics, StreamId,
};
use hub_projections::{
    Projection, ProjectionError, ProjectionMetrics, ProjectionRunner, ReadModelDb, create_tables,
};
use sqlx::{AnyConnection, Connection};

#[path = "../../tests/pg_support.rs"]
mod pg_support;

/// Counts events per stream (version 1), then per stream and event type (version 2): both the
/// layout of its table and the meaning of its rows change.
struct Tally {
    version: u32,
    /// How often its tables were dropped, by any runner of the test's world.
    drops: Arc<AtomicUsize>,
}

#[async_trait]
impl Projection for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }

    fn version(&self) -> u32 {
        self.version
    }

    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let table = if self.version == 1 {
            "CREATE TABLE IF NOT EXISTS tally (
                 stream TEXT   NOT NULL PRIMARY KEY,
                 events BIGINT NOT NULL
             )"
        } else {
            "CREATE TABLE IF NOT EXISTS tally (
                 stream     TEXT   NOT NULL,
                 event_type TEXT   NOT NULL,
                 events     BIGINT NOT NULL,
                 PRIMARY KEY (stream, event_type)
             )"
        };
        sqlx::query(table).execute(&mut *conn).await?;
        Ok(())
    }

    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DROP TABLE IF EXISTS tally")
            .execute(&mut *conn)
            .await?;
        self.drops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        _decoded: &HubEvent,
    ) -> Result<(), sqlx::Error> {
        if self.version == 1 {
            sqlx::query(
                "INSERT INTO tally (stream, events) VALUES ($1, 1)
                 ON CONFLICT (stream) DO UPDATE SET events = tally.events + 1",
            )
            .bind(event.stream_id.as_str())
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO tally (stream, event_type, events) VALUES ($1, $2, 1)
                 ON CONFLICT (stream, event_type) DO UPDATE SET events = tally.events + 1",
            )
            .bind(event.stream_id.as_str())
            .bind(&event.event_type)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Engine {
    Sqlite,
    Postgres,
}

/// An event log in a directory, and read-model databases on `engine`.
struct World {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    engine: Engine,
    store: Arc<dyn EventStore>,
    drops: Arc<AtomicUsize>,
}

async fn world(engine: Engine) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let store = SqliteEventStore::open(
        &path.join("events.sqlite"),
        SqliteSync::Normal,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("store");
    World {
        _dir: dir,
        dir: path,
        engine,
        store: Arc::new(store),
        drops: Arc::new(AtomicUsize::new(0)),
    }
}

impl World {
    /// The URL of a new, empty read-model database.
    async fn new_database(&self, name: &str) -> String {
        match self.engine {
            Engine::Sqlite => format!("sqlite://{}", self.dir.join(name).display()),
            Engine::Postgres => pg_support::fresh_database("versions").await,
        }
    }

    async fn open(&self, url: &str) -> ReadModelDb {
        ReadModelDb::connect(url)
            .await
            .expect("read-model database")
    }

    /// Runs `statements` in the database at `url` as an earlier version of the hub would have
    /// left it, before it is opened as read models.
    async fn earlier(&self, url: &str, statements: &[&str]) {
        sqlx::any::install_default_drivers();
        let url = match self.engine {
            Engine::Sqlite => format!("{url}?mode=rwc"),
            Engine::Postgres => url.to_owned(),
        };
        let mut conn = AnyConnection::connect(&url)
            .await
            .expect("earlier database");
        for sql in statements {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect("earlier layout");
        }
        conn.close().await.expect("close");
    }

    /// `n` study events of two types over three streams; the head after them.
    async fn append(&self, from: usize, n: usize) -> Position {
        let meta = EventMetadata::new("hosp-a", "service:test");
        for i in from..from + n {
            let study = format!("1.2.{}", i % 3);
            let event = if i % 4 == 3 {
                StudyEvent::StudyPurged {
                    study_uid: study.clone(),
                    reason: "test".into(),
                    purged_at: Utc::now(),
                }
            } else {
                StudyEvent::StudyStabilized {
                    study_uid: study.clone(),
                    series_count: 1,
                    instance_count: i as u32,
                    modalities: vec!["CT".into()],
                }
            };
            self.store
                .append(
                    &StreamId::new(Family::Study, &study),
                    ExpectedVersion::Any,
                    vec![event.to_new_event(meta.clone())],
                )
                .await
                .expect("append");
        }
        self.store.head().await.expect("head")
    }

    fn tally(&self, version: u32) -> Tally {
        Tally {
            version,
            drops: self.drops.clone(),
        }
    }

    /// How often the tally's tables were dropped so far.
    fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }

    fn runner(&self, db: &ReadModelDb, version: u32) -> ProjectionRunner {
        ProjectionRunner::new(
            self.store.clone(),
            db.clone(),
            Arc::new(self.tally(version)),
            ProjectionMetrics::unregistered(),
        )
    }

    /// Applies the log up to its head with `version` of the tally; the position reached.
    async fn catch_up(&self, db: &ReadModelDb, version: u32) -> Position {
        let head = self.store.head().await.expect("head");
        self.runner(db, version)
            .catch_up(head, |_| {})
            .await
            .expect("catch up")
    }
}

/// The stored (position, version) of the tally.
async fn stored(db: &ReadModelDb) -> (i64, i64) {
    stored_of(db, "tally").await
}

async fn stored_of(db: &ReadModelDb, projection: &str) -> (i64, i64) {
    sqlx::query_as("SELECT position, version FROM projection_checkpoints WHERE projection = $1")
        .bind(projection)
        .fetch_one(db.pool())
        .await
        .expect("checkpoint")
}

async fn rows_v1(db: &ReadModelDb) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT stream, events FROM tally ORDER BY stream")
        .fetch_all(db.pool())
        .await
        .expect("version 1 rows")
}

async fn rows_v2(db: &ReadModelDb) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT stream, event_type, events FROM tally ORDER BY stream, event_type")
        .fetch_all(db.pool())
        .await
        .expect("version 2 rows")
}

/// A row version 1 left that no replay writes, and a dead letter.
async fn leave_stale_rows(db: &ReadModelDb) {
    for sql in [
        "INSERT INTO tally (stream, events) VALUES ('stale', 99)",
        "INSERT INTO projection_dead_letters (projection, position, event_type, reason)
         VALUES ('tally', 1, 'Bogus', 'unreadable')",
    ] {
        sqlx::query(sql)
            .execute(db.pool())
            .await
            .expect("stale rows");
    }
}

/// Version 1 ran; version 2 starts: its tables, checkpoint and dead letters are dropped and the
/// log replayed from the start, with the rows a fresh replay gives; a version 1 runner still
/// running stops rather than writing into version 2's tables.
async fn a_changed_version_is_dropped_and_replayed(engine: Engine) {
    let w = world(engine).await;
    let head = w.append(0, 12).await;
    let db = w.open(&w.new_database("upgraded.sqlite").await).await;
    assert_eq!(w.catch_up(&db, 1).await, head);
    assert_eq!(stored(&db).await, (head as i64, 1));
    leave_stale_rows(&db).await;
    let old = w.runner(&db, 1);
    assert_eq!(old.prepare().await.expect("prepare"), head);

    let head = w.append(12, 6).await;
    let upgraded = w.runner(&db, 2);
    assert_eq!(
        upgraded.prepare().await.expect("prepare"),
        0,
        "version 2 replays from the start"
    );
    assert_eq!(stored(&db).await, (0, 2));
    assert!(db.dead_letters("tally").await.expect("dead").is_empty());
    assert_eq!(upgraded.catch_up(head, |_| {}).await.expect("replay"), head);
    assert_eq!(stored(&db).await, (head as i64, 2));

    let fresh = w.open(&w.new_database("fresh.sqlite").await).await;
    assert_eq!(w.catch_up(&fresh, 2).await, head);
    let rows = rows_v2(&db).await;
    assert_eq!(rows, rows_v2(&fresh).await);
    assert!(
        rows.iter().any(|(_, t, _)| t == "StudyPurged")
            && rows.iter().any(|(_, t, _)| t == "StudyStabilized"),
        "{rows:?}"
    );
    assert!(
        rows.iter().all(|(stream, _, _)| stream != "stale"),
        "{rows:?}"
    );
    let total: i64 = rows.iter().map(|(_, _, n)| n).sum();
    assert_eq!(total, 18);

    let more = w.append(18, 1).await;
    let events = w.store.read_all(head, 10).await.expect("read");
    assert_eq!(events.len(), 1);
    match old.apply_batch(&events).await {
        Err(ProjectionError::Version {
            projection: "tally",
            stored: 2,
            declared: 1,
        }) => {}
        other => panic!("version 1 applied into version 2's tables: {other:?}"),
    }
    assert_eq!(
        stored(&db).await,
        (head as i64, 2),
        "nothing applied at {more}"
    );
}

/// The same version starts again: nothing is dropped, it carries on from its checkpoint.
async fn an_unchanged_version_is_not_replayed(engine: Engine) {
    let w = world(engine).await;
    let head = w.append(0, 9).await;
    let db = w.open(&w.new_database("kept.sqlite").await).await;
    assert_eq!(w.catch_up(&db, 1).await, head);
    leave_stale_rows(&db).await;
    let before = rows_v1(&db).await;

    let drops = w.drops();
    create_tables(&db, &w.tally(1)).await.expect("tables");
    let again = w.runner(&db, 1);
    assert_eq!(again.prepare().await.expect("prepare"), head);
    assert_eq!(stored(&db).await, (head as i64, 1));
    assert_eq!(rows_v1(&db).await, before);
    assert!(before.contains(&("stale".to_string(), 99)), "{before:?}");
    assert_eq!(db.dead_letters("tally").await.expect("dead").len(), 1);
    assert_eq!(w.drops(), drops, "nothing was dropped");

    let head = w.append(9, 3).await;
    assert_eq!(again.catch_up(head, |_| {}).await.expect("catch up"), head);
    let total: i64 = rows_v1(&db).await.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 12 + 99, "only the new events were applied");
}

/// A checkpoint table from before versions gets the column in place, each checkpoint counting
/// as version 1 with its position kept; opening it again changes nothing; version 1 carries on
/// from there and version 2 replays.
async fn a_checkpoint_table_without_versions_is_upgraded_in_place(engine: Engine) {
    let w = world(engine).await;
    let head = w.append(0, 8).await;
    let url = w.new_database("unversioned.sqlite").await;
    let checkpoint =
        format!("INSERT INTO projection_checkpoints VALUES ('tally', {head}), ('other', 7)");
    w.earlier(
        &url,
        &[
            "CREATE TABLE projection_checkpoints (projection TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            "CREATE TABLE projection_dead_letters (projection TEXT NOT NULL, position BIGINT NOT NULL,
                 event_type TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (projection, position))",
            &checkpoint,
            "CREATE TABLE tally (stream TEXT NOT NULL PRIMARY KEY, events BIGINT NOT NULL)",
            "INSERT INTO tally VALUES ('study-1.2.0', 3), ('study-1.2.1', 3), ('study-1.2.2', 2)",
        ],
    )
    .await;
    let db = w.open(&url).await;
    assert_eq!(stored(&db).await, (head as i64, 1));
    assert_eq!(stored_of(&db, "other").await, (7, 1));
    drop(db);
    let db = w.open(&url).await;
    assert_eq!(stored(&db).await, (head as i64, 1), "opened again");
    assert_eq!(
        db.checkpoints(&["tally", "other"])
            .await
            .expect("checkpoints"),
        vec![head, 7]
    );

    assert_eq!(w.runner(&db, 1).prepare().await.expect("prepare"), head);
    let kept = rows_v1(&db).await;
    assert_eq!(kept.len(), 3, "{kept:?}");

    assert_eq!(w.catch_up(&db, 2).await, head);
    let fresh = w.open(&w.new_database("fresh.sqlite").await).await;
    assert_eq!(w.catch_up(&fresh, 2).await, head);
    assert_eq!(rows_v2(&db).await, rows_v2(&fresh).await);
    assert_eq!(stored(&db).await, (head as i64, 2));
    assert_eq!(stored_of(&db, "other").await, (7, 1));
}

/// Replicas of the new version start together on version 1's read model: exactly one drops it
/// (the check and the drop are under the projection's lock), and together they replay the log
/// once.
async fn replicas_starting_together_replay_once(engine: Engine) {
    let w = Arc::new(world(engine).await);
    let head = w.append(0, 30).await;
    let url = w.new_database("replicas.sqlite").await;
    let db = w.open(&url).await;
    assert_eq!(w.catch_up(&db, 1).await, head);
    let drops = w.drops();
    const REPLICAS: usize = 4;
    let start = Arc::new(tokio::sync::Barrier::new(REPLICAS));
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let (w, db, start) = (w.clone(), w.open(&url).await, start.clone());
        replicas.push(tokio::spawn(async move {
            start.wait().await;
            w.catch_up(&db, 2).await
        }));
    }
    for replica in replicas {
        assert_eq!(replica.await.expect("replica"), head);
    }
    assert_eq!(
        w.drops(),
        drops + 1,
        "one replica dropped version 1's tables"
    );
    let fresh = w.open(&w.new_database("fresh.sqlite").await).await;
    assert_eq!(w.catch_up(&fresh, 2).await, head);
    assert_eq!(rows_v2(&db).await, rows_v2(&fresh).await);
    assert_eq!(stored(&db).await, (head as i64, 2));
}

macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(super::Engine::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgresql() {
                super::$test(super::Engine::Postgres).await;
            }
        }
    )*};
}

on_both_engines!(
    a_changed_version_is_dropped_and_replayed,
    an_unchanged_version_is_not_replayed,
    a_checkpoint_table_without_versions_is_upgraded_in_place,
    replicas_starting_together_replay_once,
);
