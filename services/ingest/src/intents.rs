//! Intents: the blobs a batch is about to move to their final keys, kept durably before the
//! first move and removed once the batch is settled (its event appended, or its blobs removed).
//! A crash between the moves and the append leaves an intent, which the sweep settles from the
//! log (`Ingest::sweep_intents`).
//!
//! Where they are kept:
//! - one object per intent under `intents/`, on any blob store (a PUT that returned is durable
//!   on S3; a local file is fsynced with its directory);
//! - rows of one SQLite file beside the blobs (`intents.sqlite`), for a local directory that only
//!   processes of one host write (the embedded hub): added with one WAL fsync, removed without
//!   one, so no file is created and removed per batch (about 7 % of the embedded hub's CPU under
//!   a DIMSE association, measured side by side). SQLite's WAL needs memory shared between its
//!   processes, so never on a volume several hosts mount (the distributed mode's blob volume).
//!
//! The sweep reads objects on every store and rows where they are kept, so intent objects an
//! earlier version left in the embedded hub's directory are settled too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::OnceCell;

use crate::blob::{BlobError, BlobStore};

/// Where intent objects are kept (see the module documentation).
const OBJECTS: &str = "intents";

/// The SQLite file of a local store's intents, in the blob directory.
pub const LOCAL_FILE: &str = "intents.sqlite";

/// The blobs one batch moves, named before the first move.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    pub study_uid: String,
    pub instances: Vec<IntentInstance>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct IntentInstance {
    pub sop_instance_uid: String,
    pub sha256: String,
    pub blob_key: String,
}

/// Where one intent is kept.
#[derive(Clone, Debug)]
pub enum IntentKey {
    Object(String),
    Row(String),
}

/// An intent read back: `None` when it was cut off while being written (an object), before
/// anything it would list moved.
pub type Listed = (IntentKey, Option<Intent>);

/// The intents of one blob store.
#[derive(Clone)]
pub struct Intents {
    blobs: BlobStore,
    rows: Option<Arc<Rows>>,
}

/// A local store's intent rows: added on a connection that fsyncs each commit, removed on one
/// that does not (a removal lost in a power cut leaves an intent the sweep settles again).
struct Rows {
    add: SqlitePool,
    remove: SqlitePool,
    ready: OnceCell<()>,
}

impl Intents {
    /// Intents as objects in `blobs`.
    pub fn objects(blobs: &BlobStore) -> Intents {
        Intents {
            blobs: blobs.clone(),
            rows: None,
        }
    }

    /// Intents as rows of `intents.sqlite` in a local `blobs` directory (opened, and created, on
    /// first use), if it is one; only where every process writing it runs on this host.
    pub fn rows_beside(blobs: &BlobStore) -> Intents {
        let rows = blobs.local_root().map(|root| {
            let options = SqliteConnectOptions::new()
                .filename(root.join(LOCAL_FILE))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let pool = |sync| {
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(options.clone().synchronous(sync))
            };
            Arc::new(Rows {
                add: pool(SqliteSynchronous::Full),
                remove: pool(SqliteSynchronous::Normal),
                ready: OnceCell::new(),
            })
        });
        Intents {
            blobs: blobs.clone(),
            rows,
        }
    }

    /// Keeps `intent` durably; returns where.
    pub async fn add(&self, intent: &Intent) -> Result<IntentKey, BlobError> {
        let id = uuid::Uuid::now_v7().to_string();
        let body = serde_json::to_string(intent).map_err(std::io::Error::other)?;
        match &self.rows {
            Some(rows) => {
                rows.ready().await?;
                sqlx::query("INSERT INTO intents (id, created_ms, intent) VALUES (?, ?, ?)")
                    .bind(&id)
                    .bind(chrono::Utc::now().timestamp_millis())
                    .bind(body)
                    .execute(&rows.add)
                    .await?;
                Ok(IntentKey::Row(id))
            }
            None => {
                let key = format!("{OBJECTS}/{id}.json");
                self.blobs.put_durable(&key, Bytes::from(body)).await?;
                Ok(IntentKey::Object(key))
            }
        }
    }

    /// Removes settled intents.
    pub async fn remove(&self, keys: &[IntentKey]) -> Result<(), BlobError> {
        let mut ids = Vec::new();
        for key in keys {
            match key {
                IntentKey::Object(key) => self.blobs.delete(key).await?,
                IntentKey::Row(id) => ids.push(id.as_str()),
            }
        }
        if let (Some(rows), false) = (&self.rows, ids.is_empty()) {
            rows.ready().await?;
            let marks = vec!["?"; ids.len()].join(", ");
            let sql = format!("DELETE FROM intents WHERE id IN ({marks})");
            let mut query = sqlx::query(&sql);
            for id in ids {
                query = query.bind(id);
            }
            query.execute(&rows.remove).await?;
        }
        Ok(())
    }

    /// Every intent kept now, split into those at least `min_age` old and the younger ones.
    pub async fn list(&self, min_age: Duration) -> Result<(Vec<Listed>, Vec<Listed>), BlobError> {
        let (mut old, mut young) = (Vec::new(), Vec::new());
        let cutoff = crate::blob::cutoff(min_age);
        for (key, modified) in self.blobs.list_modified(OBJECTS).await? {
            let intent = match self.blobs.get(&key).await {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                // Removed since the listing: settled.
                Err(BlobError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            let listed = (IntentKey::Object(key), intent);
            if modified <= cutoff {
                old.push(listed)
            } else {
                young.push(listed)
            }
        }
        if let Some(rows) = &self.rows {
            rows.ready().await?;
            let cutoff = cutoff.timestamp_millis();
            let all: Vec<(String, i64, String)> =
                sqlx::query_as("SELECT id, created_ms, intent FROM intents")
                    .fetch_all(&rows.add)
                    .await?;
            for (id, created, body) in all {
                // A row is whole once committed: one that does not parse was not written by
                // this code, and is settled (removed) like a torn object.
                let listed = (IntentKey::Row(id), serde_json::from_str(&body).ok());
                if created <= cutoff {
                    old.push(listed)
                } else {
                    young.push(listed)
                }
            }
        }
        Ok((old, young))
    }
}

impl Rows {
    /// Creates the table once per process (every process that opens the file may).
    async fn ready(&self) -> Result<(), BlobError> {
        self.ready
            .get_or_try_init(|| async {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS intents (id TEXT PRIMARY KEY, \
                     created_ms INTEGER NOT NULL, intent TEXT NOT NULL) WITHOUT ROWID",
                )
                .execute(&self.add)
                .await
                .map(|_| ())
            })
            .await?;
        Ok(())
    }
}
