//! The pieces a hub process is composed of, shared by the embedded `hub serve` and the
//! one-service processes of `hub run`: the same code paths, only the adapters differ.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use hub_events::{EventStore, Position};
use hub_gateway::GatewayState;
use hub_gateway::auth::Auth;
use hub_ingest::dimse::{AeMapping, DimseConfig, FindCaller, FindError, FindKeys, StudyFinder};
use hub_ingest::stabilize::Stabilizer;
use hub_ingest::{BlobStore, Ingest};
use hub_policies::{AccessControl, Role, Subject};
use hub_projections::{
    AccessIndex, Projection, ProjectionMetrics, ProjectionRunner, ReadModelDb, StudyCatalog,
    StudyQuery, all_projections,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{AuthMode, Config, Secret};

/// The read models of this process, kept current by their runners.
pub struct ReadSide {
    pub runners: Vec<JoinHandle<()>>,
    pub names: Vec<&'static str>,
    /// The position the study catalog has applied (ingest answers once its writes show).
    pub catalog: watch::Receiver<Position>,
    /// The position the access index has applied (sharing commands wait for it).
    pub index: watch::Receiver<Position>,
}

pub fn start_projections(
    store: &Arc<dyn EventStore>,
    read_models: &ReadModelDb,
    metrics: &ProjectionMetrics,
    stopped: &watch::Receiver<bool>,
) -> ReadSide {
    let projections = all_projections();
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    let (catalog_tx, catalog) = watch::channel(0);
    let (index_tx, index) = watch::channel(0);
    let (mut catalog_tx, mut index_tx) = (Some(catalog_tx), Some(index_tx));
    let mut runners = Vec::new();
    for projection in projections {
        let name = projection.name();
        let mut runner = ProjectionRunner::new(
            store.clone(),
            read_models.clone(),
            projection,
            metrics.clone(),
        );
        let announce = if name == StudyCatalog.name() {
            catalog_tx.take()
        } else if name == AccessIndex.name() {
            index_tx.take()
        } else {
            None
        };
        if let Some(tx) = announce {
            runner = runner.announce_applied(tx);
        }
        runners.push(tokio::spawn(supervise(runner, stopped.clone())));
    }
    ReadSide {
        runners,
        names,
        catalog,
        index,
    }
}

/// The read side of a gateway whose read models another process fills (`hub run projector`
/// into the shared PostgreSQL read models): no runners here; the checkpoints are read every
/// 20 ms, so writers still wait until their own events show in the study catalog and the access
/// index (read-your-writes), readiness still means caught up, and `metrics` show the shared read
/// models' positions (and so their lag) as this gateway sees them.
pub async fn follow_projections(
    read_models: &ReadModelDb,
    metrics: &ProjectionMetrics,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<ReadSide> {
    let projections = all_projections();
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    // The projector may not have run yet: the tables exist before the first search.
    for projection in projections {
        hub_projections::create_tables(read_models, projection.as_ref())
            .await
            .with_context(|| format!("cannot create the tables of {}", projection.name()))?;
    }
    let (catalog_tx, catalog) = watch::channel(0);
    let (index_tx, index) = watch::channel(0);
    let poller = {
        let (db, metrics, names, mut stopped) = (
            read_models.clone(),
            metrics.clone(),
            names.clone(),
            stopped.clone(),
        );
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match db.checkpoints(&names).await {
                    Ok(positions) => {
                        failing = false;
                        let at = |name: &str| {
                            names
                                .iter()
                                .position(|n| *n == name)
                                .map_or(0, |i| positions[i])
                        };
                        for (name, p) in names.iter().zip(&positions) {
                            metrics.position.with_label_values(&[name]).set(*p as i64);
                        }
                        let (catalog_at, index_at) =
                            (at(StudyCatalog.name()), at(AccessIndex.name()));
                        for (tx, p) in [(&catalog_tx, catalog_at), (&index_tx, index_at)] {
                            tx.send_if_modified(|old| {
                                let newer = p > *old;
                                if newer {
                                    *old = p;
                                }
                                newer
                            });
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the projector's checkpoints; retrying");
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        })
    };
    Ok(ReadSide {
        runners: vec![poller],
        names,
        catalog,
        index,
    })
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

/// The policy point: the Casbin rules, and the facts it follows from the log.
pub async fn start_access(
    config: &Config,
    store: &Arc<dyn EventStore>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<(Arc<AccessControl>, JoinHandle<()>)> {
    let access = Arc::new(
        AccessControl::new()
            .await?
            .with_consult_lead(config.consult_lead),
    );
    let follower = {
        let (access, store, stopped) = (access.clone(), store.clone(), stopped.clone());
        tokio::spawn(async move {
            while let Err(e) = access.follow(store.clone(), stopped.clone()).await {
                tracing::error!(error = %e, "the access facts stopped following the log; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    Ok((access, follower))
}

/// The one authorization point of the HTTP API.
pub async fn auth(config: &Config, access: Arc<AccessControl>) -> anyhow::Result<Auth> {
    let mut auth = Auth::new(crate::token::load_verifier(config).await?, access);
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
    Ok(auth)
}

/// A secret from the configuration, or else the data directory's file of that name (created
/// once with random bytes).
pub fn secret(value: &Option<Secret>, config: &Config, file: &str) -> anyhow::Result<Vec<u8>> {
    match value {
        Some(s) => Ok(s.expose().to_vec()),
        None => crate::token::data_dir_secret(&config.data_dir, file),
    }
}

pub fn blobs(config: &Config) -> anyhow::Result<BlobStore> {
    if let Some(url) = &config.blob_url {
        return BlobStore::s3(url)
            .with_context(|| format!("cannot open the blob store {url} (config key `blob_url`)"));
    }
    BlobStore::local(config.blob_dir.clone()).with_context(|| {
        format!(
            "cannot open the blob directory {} (config key `blob_dir`)",
            config.blob_dir.display()
        )
    })
}

/// Removes staged uploads a crash left behind, at least `STAGING_MIN_AGE` old (younger ones may
/// be in progress on another replica): now, then every hour until `stopped`.
pub fn start_sweeps(ingest: Ingest, stopped: &watch::Receiver<bool>) -> JoinHandle<()> {
    let mut stopped = stopped.clone();
    tokio::spawn(async move {
        loop {
            sweep(&ingest, STAGING_MIN_AGE).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    })
}

/// One sweep of what a crash can leave in the blob store, its outcome logged (a failed sweep
/// is retried by the next one): staged uploads, and blobs moved to their final keys whose
/// event was never appended (the intents of their batches, settled from the log).
pub async fn sweep(ingest: &Ingest, min_age: Duration) {
    match ingest.blobs().sweep_staging(min_age).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed staged uploads a crash left behind"),
        Err(e) => tracing::warn!(error = %e, "sweeping staged uploads failed"),
    }
    match ingest.sweep_intents(min_age).await {
        Ok((0, _)) => {}
        Ok((settled, removed)) => tracing::info!(
            settled,
            removed,
            "settled the intents of batches a crash or an unanswered append left: removed the \
             blobs no event names"
        ),
        Err(e) => tracing::warn!(error = %e, "sweeping intents failed"),
    }
}

/// A staged upload (or an intent) this old is abandoned: even a study of several GB streams in
/// well under it, and a batch's append takes seconds at most.
pub const STAGING_MIN_AGE: Duration = Duration::from_secs(3600);

/// Where the blobs are, for messages.
pub fn describe_blobs(config: &Config) -> String {
    match &config.blob_url {
        Some(url) => url.clone(),
        None => config.blob_dir.display().to_string(),
    }
}

/// Study-level C-FIND answered from this process's catalog through the gateway's search: the
/// calling AE acts as a radiologist of the institution its title is mapped to, so it sees what
/// that institution may see, and every answer is audited like a QIDO-RS search.
pub struct CatalogFinder(pub GatewayState);

/// C-FIND has no paging: at most this many matches are returned (10 catalog pages).
const MAX_FIND_MATCHES: usize = 10_000;

impl StudyFinder for CatalogFinder {
    fn find<'a>(
        &'a self,
        caller: &'a FindCaller,
        keys: &'a FindKeys,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, FindError>> {
        Box::pin(async move {
            let identity = Subject {
                id: format!("ae:{}", caller.calling_ae),
                role: Role::Radiologist,
                institution: caller.institution.clone(),
            };
            let (study_date_from, study_date_to) = match &keys.study_date {
                Some(d) => {
                    hub_gateway::dicomweb::parse_date_range(d).map_err(FindError::Refused)?
                }
                None => (None, None),
            };
            let mut query = StudyQuery {
                study_uids: keys.study_uids.clone(),
                patient_id: keys.patient_id.clone(),
                patient_name: keys.patient_name.clone(),
                accession_number: keys.accession_number.clone(),
                study_date_from,
                study_date_to,
                modality: keys.modality.clone(),
                regional_patient_id: None,
                limit: 1000,
                offset: 0,
            };
            let mut all = Vec::new();
            loop {
                let (page, more) =
                    hub_gateway::dicomweb::find_studies(&self.0, &identity, &query, "")
                        .await
                        .map_err(|p| FindError::Unavailable(p.detail))?;
                query.offset += page.len() as u32;
                all.extend(page);
                if !more || all.len() >= MAX_FIND_MATCHES {
                    return Ok(all);
                }
            }
        })
    }
}

/// The DIMSE C-ECHO / C-STORE (and, with a finder, C-FIND) SCP on the configured address and
/// AE title.
pub async fn start_dimse(
    config: &Config,
    ingest: Ingest,
    finder: Option<Arc<dyn StudyFinder>>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(config.dimse)
        .await
        .with_context(|| format!("cannot listen on {} (config key `dimse`)", config.dimse))?;
    let mapping = if config.dimse_ae_map.is_empty() {
        AeMapping::Everyone(config.dev_institution.clone())
    } else {
        AeMapping::Known(config.dimse_ae_map.clone().into_iter().collect())
    };
    Ok(tokio::spawn(hub_ingest::dimse::serve(
        listener,
        ingest,
        DimseConfig {
            ae_title: config.dimse_ae_title.clone(),
            mapping,
            finder,
        },
        stopped.clone(),
    )))
}

/// StudyStabilized after the quiet period; restarted after an error (its state is rebuilt from
/// the log).
pub fn start_stabilizer(
    config: &Config,
    store: &Arc<dyn EventStore>,
    stopped: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (store, quiet, stopped) = (store.clone(), config.stabilize_after, stopped.clone());
    tokio::spawn(async move {
        while let Err(e) = Stabilizer::new(store.clone(), quiet)
            .run(stopped.clone())
            .await
        {
            tracing::error!(error = %e, "the stabilizer stopped; restarting in 5 s");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}
