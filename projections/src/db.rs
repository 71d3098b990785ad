//! The read-model database: its own SQLite file, so projection writes never queue behind appends
//! to the log (SQLite has one writer per file).

use std::path::Path;
use std::time::Duration;

use hub_events::Position;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, SqliteConnection, Transaction};

#[derive(Clone)]
pub struct ReadModelDb {
    pool: SqlitePool,
}

impl ReadModelDb {
    pub async fn open(path: &Path) -> Result<ReadModelDb, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A read model is rebuilt from the log if a power cut loses its last commits, so it
            // does not pay for an fsync per batch.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // Searches read pages in place (no copy per page read); the mapping is of the file,
            // so the pages are the operating system's cache, shared by the connections.
            .pragma("mmap_size", (256u64 << 20).to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS projection_checkpoints (
                 projection TEXT PRIMARY KEY,
                 position   INTEGER NOT NULL
             )",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS projection_dead_letters (
                 projection TEXT    NOT NULL,
                 position   INTEGER NOT NULL,
                 event_type TEXT    NOT NULL,
                 reason     TEXT    NOT NULL,
                 PRIMARY KEY (projection, position)
             )",
        )
        .execute(&pool)
        .await?;
        Ok(ReadModelDb { pool })
    }

    /// Refreshes the query planner's statistics (`ANALYZE`, sampling at most 1,000 rows per
    /// index, so it costs milliseconds whatever the size).
    pub async fn refresh_statistics(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA analysis_limit = 1000")
            .execute(&mut *conn)
            .await?;
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction that holds the write lock from its start (no upgrade deadlocks when
    /// several projections write at once).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// The position `projection` has applied (0 if it never ran).
    pub async fn checkpoint(&self, projection: &str) -> Result<Position, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        checkpoint_in(&mut conn, projection).await
    }

    /// Events `projection` could not decode: (position, event type, reason).
    pub async fn dead_letters(
        &self,
        projection: &str,
    ) -> Result<Vec<(Position, String, String)>, sqlx::Error> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT position, event_type, reason FROM projection_dead_letters
             WHERE projection = ? ORDER BY position",
        )
        .bind(projection)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(p, t, r)| (p as u64, t, r)).collect())
    }
}

pub(crate) async fn checkpoint_in(
    conn: &mut SqliteConnection,
    projection: &str,
) -> Result<Position, sqlx::Error> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = ?")
            .bind(projection)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(position.unwrap_or(0) as u64)
}

pub(crate) async fn set_checkpoint_in(
    conn: &mut SqliteConnection,
    projection: &str,
    position: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, position) VALUES (?, ?)
         ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
    )
    .bind(projection)
    .bind(position as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
