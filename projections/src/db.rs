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
            .busy_timeout(Duration::from_secs(30));
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
