//! `hub serve`: the embedded all-in-one hub.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hub_consult::{ConsultMetrics, Consults};
use hub_events::StoreMetrics;
use hub_gateway::GatewayState;
use hub_gateway::auth::Auth;
use hub_gateway::deid::DeidSecret;
use hub_ingest::dimse::{AeMapping, DimseConfig};
use hub_ingest::stabilize::Stabilizer;
use hub_ingest::{BlobStore, Ingest};
use hub_policies::{AccessControl, Role, Subject};
use hub_projections::{
    AccessIndex, Projection, ProjectionMetrics, ProjectionRunner, StudyCatalog, all_projections,
};
use hub_sharing::{PatientKey, Sharing};
use prometheus::Registry;
use tokio::sync::watch;

use crate::config::{AuthMode, Config};
use crate::embedded;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let _lock = embedded::lock_data_dir(&config, "hub serve")?;
    let registry = Registry::new();
    let store_metrics = StoreMetrics::new(&registry)?;
    let projection_metrics = ProjectionMetrics::new(&registry)?;
    let hub = embedded::open(&config, store_metrics).await?;

    let (stop, stopped) = watch::channel(false);
    let projections = all_projections();
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    let mut runners = Vec::new();
    let (catalog_applied, catalog_applied_rx) = watch::channel(0);
    let (index_applied, index_applied_rx) = watch::channel(0);
    let mut catalog_applied = Some(catalog_applied);
    let mut index_applied = Some(index_applied);
    for projection in projections {
        let name = projection.name();
        let mut runner = ProjectionRunner::new(
            hub.store.clone(),
            hub.read_models.clone(),
            projection,
            projection_metrics.clone(),
        );
        // Ingest waits for the catalog, sharing commands for the access index.
        let announce = if name == StudyCatalog.name() {
            catalog_applied.take()
        } else if name == AccessIndex.name() {
            index_applied.take()
        } else {
            None
        };
        if let Some(tx) = announce {
            runner = runner.announce_applied(tx);
        }
        runners.push(tokio::spawn(supervise(runner, stopped.clone())));
    }

    // The policy point: the Casbin rules, and the facts it follows from the log.
    let access = Arc::new(
        AccessControl::new()
            .await?
            .with_consult_lead(config.consult_lead),
    );
    let follower = {
        let (access, store, stopped) = (access.clone(), hub.store.clone(), stopped.clone());
        tokio::spawn(async move {
            while let Err(e) = access.follow(store.clone(), stopped.clone()).await {
                tracing::error!(error = %e, "the access facts stopped following the log; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let sharing = Sharing::new(
        hub.store.clone(),
        access.clone(),
        PatientKey::new(crate::token::data_dir_secret(
            &config.data_dir,
            "patient.key",
        )?),
    )
    .with_search_index(index_applied_rx.clone());
    let expiry = {
        let (sharing, stopped) = (sharing.clone(), stopped.clone());
        tokio::spawn(async move { sharing.run_expiry(stopped).await })
    };
    let mut auth = Auth::new(crate::token::load_verifier(&config).await?, access.clone());
    if config.auth == AuthMode::Development {
        tracing::warn!(
            institution = %config.dev_institution,
            "auth = development: requests without a token act as a hospital_admin of the development institution"
        );
        auth = auth.with_development_identity(Subject {
            id: "developer".into(),
            role: Role::HospitalAdmin,
            institution: config.dev_institution.clone(),
        });
    }

    let blobs = BlobStore::local(config.data_dir.join("blobs")).with_context(|| {
        format!(
            "cannot open the blob directory in {}",
            config.data_dir.display()
        )
    })?;
    // AI inference on stabilized studies, or one line saying why it is off.
    let inference = crate::inference::start(
        &config,
        hub.store.clone(),
        blobs.clone(),
        &registry,
        stopped.clone(),
    );
    // Ingest answers a STOW-RS request or a C-STORE once the catalog shows what it recorded.
    let ingest = Ingest::new(hub.store.clone(), blobs, config.stow_max_bytes)
        .with_visibility(catalog_applied_rx);
    let dimse_listener = tokio::net::TcpListener::bind(config.dimse)
        .await
        .with_context(|| format!("cannot listen on {} (config key `dimse`)", config.dimse))?;
    let mapping = if config.dimse_ae_map.is_empty() {
        AeMapping::Everyone(config.dev_institution.clone())
    } else {
        AeMapping::Known(config.dimse_ae_map.clone().into_iter().collect())
    };
    let dimse = tokio::spawn(hub_ingest::dimse::serve(
        dimse_listener,
        ingest.clone(),
        DimseConfig {
            ae_title: config.dimse_ae_title.clone(),
            mapping,
        },
        stopped.clone(),
    ));
    let stabilizer = {
        let (store, quiet, stopped) = (hub.store.clone(), config.stabilize_after, stopped.clone());
        tokio::spawn(async move {
            // Restarted after an error: its state is rebuilt from the log.
            while let Err(e) = Stabilizer::new(store.clone(), quiet)
                .run(stopped.clone())
                .await
            {
                tracing::error!(error = %e, "the stabilizer stopped; restarting in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let consults =
        Consults::new(hub.store.clone(), access.clone()).with_search_index(index_applied_rx);
    let consult_metrics = ConsultMetrics::new(&registry)?;
    let state = GatewayState {
        store: hub.store.clone(),
        registry,
        projection_metrics,
        projections: Arc::new(names),
        read_models: hub.read_models.clone(),
        ingest: Some(ingest),
        auth,
        sharing: Some(sharing),
        consults: Some(consults),
        consult_metrics: Some(consult_metrics),
        deid: DeidSecret(Arc::new(crate::token::data_dir_secret(
            &config.data_dir,
            "deid.key",
        )?)),
    };
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
    hub_gateway::serve(listener, state, shutdown_signal())
        .await
        .context("HTTP server failed")?;
    let _ = stop.send(true);
    let _ = dimse.await;
    let _ = stabilizer.await;
    let _ = expiry.await;
    if let Some(inference) = inference {
        let _ = inference.await;
    }
    let _ = follower.await;
    for r in runners {
        let _ = r.await;
    }
    tracing::info!("hub stopped");
    Ok(())
}

/// Keeps a projection running: a runner that gives up (after its own retries) is restarted from
/// its checkpoint after a pause, so one bad spell of I/O does not freeze a read model for good.
async fn supervise(runner: ProjectionRunner, stopped: watch::Receiver<bool>) {
    loop {
        match runner.clone().run(stopped.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "projection stopped; restarting in 5 s");
                let mut stopped = stopped.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

async fn shutdown_signal() {
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
