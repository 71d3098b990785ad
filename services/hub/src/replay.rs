//! `hub replay`: drop and rebuild read models from the log, with a progress bar.

use std::time::Instant;

use anyhow::bail;
use hub_events::StoreMetrics;
use hub_projections::{ProjectionMetrics, all_projections, rebuild};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::embedded;

pub async fn replay(config: Config, only: Option<&str>) -> anyhow::Result<()> {
    let _lock = embedded::lock_data_dir(&config, "hub replay")?;
    let mut hub = embedded::open(&config, StoreMetrics::unregistered()).await?;
    // With `database_url`: the distributed mode's log, into this data directory's read models
    // (a gateway's, stopped; or a fresh one to compare with).
    if let Some(url) = &config.database_url {
        hub.store = std::sync::Arc::new(
            hub_events::PostgresEventStore::connect(
                url.expose_str(),
                4,
                false,
                StoreMetrics::unregistered(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL event log: {e}"))?,
        );
    }
    let mut projections = all_projections();
    if let Some(name) = only {
        let known: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        projections.retain(|p| p.name() == name);
        if projections.is_empty() {
            bail!("no projection named {name:?}; known: {}", known.join(", "));
        }
    }
    let head = hub.store.head().await?;
    for projection in projections {
        let name = projection.name();
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
            hub.store.clone(),
            hub.read_models.clone(),
            projection,
            ProjectionMetrics::unregistered(),
            |p| bar.set_position(p),
        )
        .await?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        let dead = hub.read_models.dead_letters(name).await?.len();
        println!(
            "rebuilt {name}: {reached} events in {secs:.2} s ({:.0} events/s), {dead} dead letters",
            reached as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
