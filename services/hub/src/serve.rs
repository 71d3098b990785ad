//! `hub serve`: the embedded all-in-one hub.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hub_consult::{ConsultMetrics, Consults};
use hub_events::StoreMetrics;
use hub_gateway::GatewayState;
use hub_gateway::deid::DeidSecret;
use hub_ingest::Ingest;
use hub_projections::ProjectionMetrics;
use hub_sharing::{PatientKey, Sharing};
use prometheus::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::{embedded, parts};

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let _lock = embedded::lock_data_dir(&config, "hub serve")?;
    let registry = Registry::new();
    let store_metrics = StoreMetrics::new(&registry)?;
    let projection_metrics = ProjectionMetrics::new(&registry)?;
    let hub = embedded::open(&config, store_metrics).await?;

    let (stop, stopped) = watch::channel(false);
    let read_side =
        parts::start_projections(&hub.store, &hub.read_models, &projection_metrics, &stopped);
    let (access, follower) = parts::start_access(&config, &hub.store, &stopped).await?;
    let sharing = Sharing::new(
        hub.store.clone(),
        access.clone(),
        PatientKey::new(parts::secret(&config.patient_key, &config, "patient.key")?),
    )
    .with_search_index(read_side.index.clone());
    let expiry = {
        let (sharing, stopped) = (sharing.clone(), stopped.clone());
        tokio::spawn(async move { sharing.run_expiry(stopped).await })
    };
    let auth = parts::auth(&config, access.clone()).await?;

    let blobs = parts::blobs(&config)?;
    // AI inference on stabilized studies, or one line saying why it is off.
    let inference = crate::inference::start(
        &config,
        hub.store.clone(),
        blobs.clone(),
        &registry,
        stopped.clone(),
    );
    // Ingest answers a STOW-RS request or a C-STORE once the catalog shows what it recorded.
    // One process writes these blobs: intents as rows beside them, not a file per batch.
    let ingest = Ingest::new(hub.store.clone(), blobs, config.stow_max_bytes)
        .with_intent_rows()
        .with_visibility(read_side.catalog.clone());
    // Nothing is accepted yet and no other process writes here: every staged upload and every
    // intent is a crash's leftover.
    parts::sweep(&ingest, Duration::ZERO).await;
    let sweeper = parts::start_sweeps(ingest.clone(), &stopped);
    let stabilizer = parts::start_stabilizer(&config, &hub.store, &stopped);
    let consults =
        Consults::new(hub.store.clone(), access.clone()).with_search_index(read_side.index.clone());
    let consult_metrics = ConsultMetrics::new(&registry)?;
    let state = GatewayState {
        store: hub.store.clone(),
        registry,
        projection_metrics,
        projections: Arc::new(read_side.names.clone()),
        read_models: hub.read_models.clone(),
        ingest: Some(ingest.clone()),
        auth,
        sharing: Some(sharing),
        consults: Some(consults),
        consult_metrics: Some(consult_metrics),
        deid: DeidSecret(Arc::new(parts::secret(
            &config.deid_key,
            &config,
            "deid.key",
        )?)),
        public_url: config.public_url.clone(),
    };
    let finder = Arc::new(parts::CatalogFinder(state.clone()));
    let dimse = parts::start_dimse(&config, ingest, Some(finder), &stopped).await?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {} (config key `http`)", config.http))?;
    tracing::info!(
        http = %config.http,
        dimse = %config.dimse,
        ae_title = %config.dimse_ae_title,
        data_dir = %config.data_dir.display(),
        "hub serving (embedded: SQLite, in-process bus, local blobs)"
    );
    hub_gateway::serve(listener, state, config.http_limits(), shutdown_signal())
        .await
        .context("HTTP server failed")?;
    let _ = stop.send(true);
    let _ = dimse.await;
    let _ = stabilizer.await;
    let _ = sweeper.await;
    let _ = expiry.await;
    if let Some(inference) = inference {
        let _ = inference.await;
    }
    let _ = follower.await;
    for r in read_side.runners {
        let _ = r.await;
    }
    tracing::info!("hub stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
