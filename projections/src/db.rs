//! The read-model database: its own SQLite file in the embedded mode, so projection writes
//! never queue behind appends to the log (SQLite has one writer per file); a PostgreSQL database
//! shared by the projector and the gateways in the distributed mode. One code path over both
//! (sqlx's `Any` driver, see [`crate::sql`]).

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use hub_events::Position;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Connection, Executor, Transaction};
use sqlx::{AnyConnection, AnyPool};

use crate::runner::Projection;
use crate::sql::Dialect;

#[derive(Clone)]
pub struct ReadModelDb {
    pool: AnyPool,
    dialect: Dialect,
    /// The audit trail's database ([`Part::Audit`]): in the embedded mode a SQLite file of its
    /// own beside this one, because every search writes to it; the same database on PostgreSQL.
    audit: AnyPool,
    audit_apart: bool,
}

/// Where a projection's tables (and its checkpoint) live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The read models searches read.
    Models,
    /// The audit trail, which every search appends to. In one SQLite file with the catalog,
    /// each of those commits made every reader of the catalog drop its page cache and read the
    /// pages again (measured: 12 % of a search-heavy profile in `pread`).
    Audit,
}

/// The SQLite file of the audit trail beside the read models at `path`
/// (`readmodels.sqlite` → `readmodels-audit.sqlite`).
pub fn audit_file(path: &Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "readmodels".into(), |s| s.to_string_lossy());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-audit.{}", ext.to_string_lossy()),
        None => format!("{stem}-audit"),
    };
    path.with_file_name(name)
}

pub(crate) fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl ReadModelDb {
    /// The embedded mode's read models: a SQLite file, created if missing, and the audit
    /// trail's file beside it ([`audit_file`]).
    pub async fn open(path: &Path) -> Result<ReadModelDb, sqlx::Error> {
        let pool = ReadModelDb::sqlite_pool(path).await?;
        let audit = ReadModelDb::sqlite_pool(&audit_file(path)).await?;
        let db = ReadModelDb::prepare(pool, Dialect::Sqlite, Some(audit)).await?;
        db.drop_moved_audit_trail().await?;
        Ok(db)
    }

    /// Before it had a file of its own the audit trail lived in this one: that copy and its
    /// checkpoint go (its runner fills the audit file from the log), so no reader of the
    /// checkpoints finds the old position.
    async fn drop_moved_audit_trail(&self) -> Result<(), sqlx::Error> {
        let audit = crate::AuditTrail;
        let mut tx = self.begin_write().await?;
        audit.drop_tables(&mut tx).await?;
        for table in ["projection_checkpoints", "projection_dead_letters"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE projection = $1"))
                .bind(audit.name())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn sqlite_pool(path: &Path) -> Result<AnyPool, sqlx::Error> {
        install_drivers();
        let absolute = std::path::absolute(path).map_err(sqlx::Error::Io)?;
        let file = url::Url::from_file_path(&absolute).map_err(|()| {
            sqlx::Error::Configuration(format!("not a usable path: {}", path.display()).into())
        })?;
        AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL: searches read while a projection writes. A read model is rebuilt
                    // from the log if a power cut loses its last commits, so it does not pay
                    // for an fsync per batch. No memory map: every write (the audit trail
                    // records each query) makes a reader drop its whole mapping at its next
                    // read and fault every page in again, which cost a deep QIDO-RS page more
                    // than reading the pages into the connection's cache (measured: 19-23 ms
                    // against 13-16 ms at p50 for offsets up to 100,000).
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                         PRAGMA busy_timeout = 30000; PRAGMA mmap_size = 0;
                         PRAGMA cache_size = -16384;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&format!("sqlite://{}?mode=rwc", file.path()))
            .await
    }

    /// Read models in the database at `url`: `postgres://...` (the distributed mode), or
    /// `sqlite://PATH`.
    pub async fn connect(url: &str) -> Result<ReadModelDb, sqlx::Error> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return ReadModelDb::open(Path::new(path)).await;
        }
        // One plain connection first: its error says what is wrong (refused, authentication,
        // no such database), where the pool's would only say it timed out.
        ReadModelDb::probe(url).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let dialect = Dialect::of_pool(&pool);
        ReadModelDb::prepare(pool, dialect, None).await
    }

    /// Whether the database at `url` answers (a fresh connection, closed again): for readiness
    /// checks, which must notice an outage a pooled connection would hide.
    pub async fn probe(url: &str) -> Result<(), sqlx::Error> {
        install_drivers();
        let mut conn = AnyConnection::connect(url).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    }

    async fn prepare(
        pool: AnyPool,
        dialect: Dialect,
        audit: Option<AnyPool>,
    ) -> Result<ReadModelDb, sqlx::Error> {
        let db = ReadModelDb {
            audit_apart: audit.is_some(),
            audit: audit.unwrap_or_else(|| pool.clone()),
            pool,
            dialect,
        };
        db.create_bookkeeping().await?;
        if db.audit_apart {
            db.part(Part::Audit).create_bookkeeping().await?;
        }
        Ok(db)
    }

    /// The checkpoint and dead-letter tables.
    async fn create_bookkeeping(&self) -> Result<(), sqlx::Error> {
        // Processes starting together (the projector, the gateways) must not create the same
        // tables at once: PostgreSQL's `IF NOT EXISTS` is not atomic across sessions.
        let mut tx = self.begin_write().await?;
        lock_in(&mut tx, "projection_checkpoints").await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS projection_checkpoints (
                 projection TEXT PRIMARY KEY,
                 position   BIGINT NOT NULL,
                 version    BIGINT NOT NULL DEFAULT 1
             )",
        )
        .execute(&mut *tx)
        .await?;
        // A table from before projections had versions: its checkpoints were written by the
        // first version of each projection.
        let versioned: i64 = sqlx::query_scalar(self.dialect.column_count())
            .bind("projection_checkpoints")
            .bind("version")
            .fetch_one(&mut *tx)
            .await?;
        if versioned == 0 {
            tracing::info!("projection_checkpoints has no version column: added (version 1)");
            sqlx::query(
                "ALTER TABLE projection_checkpoints ADD COLUMN version BIGINT NOT NULL DEFAULT 1",
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS projection_dead_letters (
                 projection TEXT    NOT NULL,
                 position   BIGINT NOT NULL,
                 event_type TEXT    NOT NULL,
                 reason     TEXT    NOT NULL,
                 PRIMARY KEY (projection, position)
             )",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The database of `part`: this one, or the audit trail's.
    pub fn part(&self, part: Part) -> ReadModelDb {
        match part {
            Part::Models => self.clone(),
            Part::Audit => ReadModelDb {
                pool: self.audit.clone(),
                dialect: self.dialect,
                audit: self.audit.clone(),
                audit_apart: false,
            },
        }
    }

    /// Refreshes the query planner's statistics (`ANALYZE`, sampling at most 1,000 rows per
    /// index, so it costs milliseconds whatever the size).
    pub async fn refresh_statistics(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA analysis_limit = 1000")
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction. On SQLite it holds the write lock from its start (no upgrade
    /// deadlocks when several projections write at once); PostgreSQL locks rows as it writes.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }

    /// The position `projection` has applied (0 if it never ran).
    pub async fn checkpoint(&self, projection: &str) -> Result<Position, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        checkpoint_in(&mut conn, projection).await
    }

    /// The positions `projections` have applied, in their order (0 for one that never ran).
    pub async fn checkpoints(&self, projections: &[&str]) -> Result<Vec<Position>, sqlx::Error> {
        const ALL: &str = "SELECT projection, position FROM projection_checkpoints";
        let mut rows: Vec<(String, i64)> = sqlx::query_as(ALL).fetch_all(&self.pool).await?;
        if self.audit_apart {
            rows.extend(
                sqlx::query_as::<_, (String, i64)>(ALL)
                    .fetch_all(&self.audit)
                    .await?,
            );
        }
        Ok(projections
            .iter()
            .map(|name| {
                rows.iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, p)| *p as Position)
            })
            .collect())
    }

    /// Events `projection` could not decode: (position, event type, reason).
    pub async fn dead_letters(
        &self,
        projection: &str,
    ) -> Result<Vec<(Position, String, String)>, sqlx::Error> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT position, event_type, reason FROM projection_dead_letters
             WHERE projection = $1 ORDER BY position",
        )
        .bind(projection)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(p, t, r)| (p as u64, t, r)).collect())
    }
}

/// Serializes the writers of `name` (one projection's tables) across processes until the end of
/// the transaction: on PostgreSQL two projector replicas could otherwise both read the same
/// checkpoint and apply the same events twice. SQLite's write transaction is already exclusive.
pub(crate) async fn lock_in(conn: &mut AnyConnection, name: &str) -> Result<(), sqlx::Error> {
    if Dialect::of_conn(conn) == Dialect::Postgres {
        // `::text`: the lock function returns `void`, which the `Any` driver cannot decode.
        sqlx::query("SELECT pg_advisory_xact_lock(20507, hashtext($1))::text")
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn checkpoint_in(
    conn: &mut AnyConnection,
    projection: &str,
) -> Result<Position, sqlx::Error> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = $1")
            .bind(projection)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(position.unwrap_or(0) as u64)
}

/// The position `projection` has applied and the version of the projection that applied it
/// (`None` if it never stored a checkpoint).
pub(crate) async fn stored_in(
    conn: &mut AnyConnection,
    projection: &str,
) -> Result<Option<(Position, u32)>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT position, version FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(position, version)| {
        let version = u32::try_from(version).map_err(|_| {
            sqlx::Error::Decode(format!("projection {projection}: stored version {version}").into())
        })?;
        Ok((position as Position, version))
    })
    .transpose()
}

/// Stores `position` as the checkpoint of `projection`, applied by its `version`.
pub(crate) async fn set_checkpoint_in(
    conn: &mut AnyConnection,
    projection: &str,
    position: Position,
    version: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, position, version) VALUES ($1, $2, $3)
         ON CONFLICT (projection) DO UPDATE
         SET position = excluded.position, version = excluded.version",
    )
    .bind(projection)
    .bind(position as i64)
    .bind(i64::from(version))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
