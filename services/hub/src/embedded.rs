//! Opening the embedded hub's pieces from its data directory, shared by `serve` and `replay`.

use std::fs::{File, TryLockError};
use std::sync::Arc;

use anyhow::{Context, bail};
use hub_events::{EventStore, SqliteEventStore, StoreMetrics};
use hub_projections::ReadModelDb;

use crate::config::Config;

/// The data directory's lock: held by `hub serve` for its lifetime, and by `hub replay`, so a
/// rebuild never races a running projection.
pub struct DataDirLock(#[allow(dead_code)] File);

pub fn lock_data_dir(config: &Config, what: &str) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create data directory {} (config key `data_dir`)",
            config.data_dir.display()
        )
    })?;
    let path = config.lock_file();
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock(file)),
        Err(TryLockError::WouldBlock) => bail!(
            "another hub process is using data directory {} ({what} needs it alone); stop it first",
            config.data_dir.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

pub struct Embedded {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelDb,
}

pub async fn open(config: &Config, store_metrics: StoreMetrics) -> anyhow::Result<Embedded> {
    std::fs::create_dir_all(&config.blob_dir).with_context(|| {
        format!(
            "cannot create the blob directory {} (config key `blob_dir`)",
            config.blob_dir.display()
        )
    })?;
    let store = SqliteEventStore::open(&config.events_db(), config.sqlite_sync, store_metrics)
        .await
        .with_context(|| format!("cannot open the event log {}", config.events_db().display()))?;
    let read_models = open_read_models(config).await?;
    Ok(Embedded {
        store: Arc::new(store),
        read_models,
    })
}

/// The data directory's SQLite read models, created if missing.
pub async fn open_read_models(config: &Config) -> anyhow::Result<ReadModelDb> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create data directory {} (config key `data_dir`)",
            config.data_dir.display()
        )
    })?;
    ReadModelDb::open(&config.read_models_db())
        .await
        .with_context(|| {
            format!(
                "cannot open the read models {}",
                config.read_models_db().display()
            )
        })
}
