//! `hub replay`: drop and rebuild read models from the log, with a progress bar.

use std::time::Instant;

use std::sync::Arc;

use anyhow::{anyhow, bail};
use hub_events::{EventStore, PostgresEventStore, StoreMetrics};
use hub_projections::{ProjectionMetrics, ReadModelDb, all_projections, rebuild};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, Secret};
use crate::embedded;

pub async fn replay(config: Config, only: Option<&str>) -> anyhow::Result<()> {
    let (store, read_models, _lock): (Arc<dyn EventStore>, ReadModelDb, _) =
        match (&config.database_url, &config.read_models_url) {
            // The distributed mode: the PostgreSQL log into the shared read models (the
            // projector's; or a fresh database to compare with). Replicas of the projector
            // running meanwhile take turns with the rebuild per batch, never applying twice.
            (Some(log), Some(read)) => (
                postgres_log(log).await?,
                ReadModelDb::connect(read.expose_str())
                    .await
                    .map_err(|e| anyhow!("cannot open the PostgreSQL read models: {e}"))?,
                None,
            ),
            // The PostgreSQL log into this data directory's read models (a gateway's, stopped;
            // or a fresh one to compare with).
            (Some(log), None) => {
                let lock = embedded::lock_data_dir(&config, "hub replay")?;
                let read_models = embedded::open_read_models(&config).await?;
                (postgres_log(log).await?, read_models, Some(lock))
            }
            (None, Some(_)) => bail!(
                "`read_models_url` (HUB_READ_MODELS_URL) is for the distributed mode: set \
                 `database_url` (HUB_DATABASE_URL) to the PostgreSQL event log too"
            ),
            (None, None) => {
                let lock = embedded::lock_data_dir(&config, "hub replay")?;
                let hub = embedded::open(&config, StoreMetrics::unregistered()).await?;
                (hub.store, hub.read_models, Some(lock))
            }
        };
    let mut projections = all_projections();
    if let Some(name) = only {
        let known: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        projections.retain(|p| p.name() == name);
        if projections.is_empty() {
            bail!("no projection named {name:?}; known: {}", known.join(", "));
        }
    }
    let head = store.head().await?;
    for projection in projections {
        let (name, part) = (projection.name(), projection.part());
        let bar = ProgressBar::new(head);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>16} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(name);
        let started = Instant::now();
        let reached = rebuild(
            store.clone(),
            read_models.clone(),
            projection,
            ProjectionMetrics::unregistered(),
            |p| bar.set_position(p),
        )
        .await?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        let dead = read_models.part(part).dead_letters(name).await?.len();
        println!(
            "rebuilt {name}: {reached} events in {secs:.2} s ({:.0} events/s), {dead} dead letters",
            reached as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

async fn postgres_log(url: &Secret) -> anyhow::Result<Arc<dyn EventStore>> {
    let store =
        PostgresEventStore::connect(url.expose_str(), 4, false, StoreMetrics::unregistered())
            .await
            .map_err(|e| anyhow!("cannot open the PostgreSQL event log: {e}"))?;
    Ok(Arc::new(store))
}
