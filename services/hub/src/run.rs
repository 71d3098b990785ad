//! `hub run SERVICE`: one service as its own process (the distributed mode), against the
//! PostgreSQL event log, Kafka and the blob store, configured by environment variables.
//!
//! Every process answers `/healthz` (alive) and `/readyz` (200 only when everything it needs
//! answers; else 503 naming what it cannot reach) on its HTTP address from its first moment, and
//! keeps retrying what it cannot reach with a growing pause. The services are the same libraries
//! `hub serve` composes (see `parts.rs`); only the adapters differ: the PostgreSQL store, the
//! Kafka feed into the local bus, consumer groups, the relay.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hub_consult::{ConsultMetrics, Consults};
use hub_events::kafka::{
    FeedMetrics, GroupConsumer, GroupMetrics, KafkaConfig, KafkaFeed, Relay, RelayMetrics, Topic,
};
use hub_events::{EventStore, PostgresEventStore, StoreMetrics};
use hub_gateway::GatewayState;
use hub_gateway::deid::DeidSecret;
use hub_ingest::{BlobStore, Ingest};
use hub_projections::{ProjectionMetrics, ReadModelDb};
use hub_sharing::{PatientKey, Sharing};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use crate::config::{Config, Secret};
use crate::parts;

/// The services `hub run` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// HTTP: DICOMweb (QIDO, WADO, STOW), the REST API; reads the shared PostgreSQL read models
    /// (`read_models_url`) the projector fills, or else projects into its own, fed from Kafka.
    Gateway,
    /// Every projection, from Kafka into the shared PostgreSQL read models (`read_models_url`);
    /// replicas take turns per projection, each batch applied once.
    Projector,
    /// DIMSE C-ECHO/C-STORE SCP and the study stabilizer.
    Ingest,
    /// Publishes the PostgreSQL event log to Kafka (run exactly one).
    Relay,
    /// ONNX models on stabilized studies, in the consumer group `<prefix>-inference`.
    Inference,
    /// The share expiry sweeper.
    Sharing,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Projector => "projector",
            Service::Ingest => "ingest",
            Service::Relay => "relay",
            Service::Inference => "inference",
            Service::Sharing => "sharing",
        }
    }
}

/// What a process needs, each `Ok` or the reason it is not there.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<&'static str, Result<(), String>>>>);

impl Readiness {
    pub fn set(&self, what: &'static str, status: Result<(), String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let (Err(why), Some(Ok(()))) = (&status, map.get(what)) {
            tracing::warn!(component = what, reason = %why, "not ready");
        }
        map.insert(what, status);
    }

    fn report(&self) -> (bool, serde_json::Value) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let ready = !map.is_empty() && map.values().all(Result::is_ok);
        let checks: serde_json::Map<String, serde_json::Value> = map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Ok(()) => json!("ok"),
                    Err(why) => json!(why),
                };
                ((*k).to_string(), v)
            })
            .collect();
        (ready, json!({ "ready": ready, "checks": checks }))
    }
}

async fn readyz(ready: Readiness) -> Response {
    let (ok, body) = ready.report();
    if ok {
        axum::Json(body).into_response()
    } else {
        // An RFC 9457 problem, naming what is missing.
        let detail = body["checks"]
            .as_object()
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| *v != "ok")
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json!({
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": format!("not ready: {detail}"),
                "checks": body["checks"],
            })
            .to_string(),
        )
            .into_response()
    }
}

fn readyz_router(ready: Readiness) -> Router {
    Router::new().route("/readyz", get(move || readyz(ready.clone())))
}

/// `/healthz`, `/readyz` and `/metrics` for the processes without the gateway's router (and for
/// the gateway while it connects).
fn health_router(ready: Readiness, registry: Registry, service: Service) -> Router {
    readyz_router(ready)
        .route(
            "/healthz",
            get(move || async move {
                axum::Json(json!({"status": "alive", "service": service.name()}))
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = Vec::new();
                    let _ = TextEncoder::new().encode(&registry.gather(), &mut body);
                    (
                        [(
                            header::CONTENT_TYPE,
                            TextEncoder::new().format_type().to_owned(),
                        )],
                        body,
                    )
                }
            }),
        )
}

/// `host:port/db` of a PostgreSQL URL, without user or password (for messages).
fn describe_database(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('?').next().unwrap_or(rest).to_string()
}

/// A growing pause: 0.5 s, 1 s, 2 s ... at most 10 s; false when stopping.
async fn backoff(attempt: &mut u32, stopped: &mut watch::Receiver<bool>) -> bool {
    let pause = Duration::from_millis((500u64 << (*attempt).min(5)).min(10_000));
    *attempt += 1;
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = stopped.wait_for(|s| *s) => false,
    }
}

/// Connects with `connect` until it succeeds, reporting `check` (not ready, with the reason)
/// meanwhile and pausing longer after each failure; `None` when stopping first.
async fn connect_with_retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    check: &'static str,
    what: &str,
    ready: &Readiness,
    mut stopped: watch::Receiver<bool>,
    mut connect: impl FnMut() -> F,
) -> Option<T> {
    let mut attempt = 0;
    loop {
        match connect().await {
            Ok(connected) => {
                ready.set(check, Ok(()));
                tracing::info!("connected to {what}");
                return Some(connected);
            }
            Err(e) => {
                ready.set(check, Err(format!("cannot reach {what}: {e}")));
                tracing::warn!(error = %e, "cannot reach {what}; retrying");
                if !backoff(&mut attempt, &mut stopped).await {
                    return None;
                }
            }
        }
    }
}

async fn connect_store(
    url: &Secret,
    listen: bool,
    metrics: StoreMetrics,
    ready: &Readiness,
    stopped: watch::Receiver<bool>,
) -> Option<Arc<dyn EventStore>> {
    let what = format!("PostgreSQL at {}", describe_database(url.expose_str()));
    let store = connect_with_retry("postgres", &what, ready, stopped, || {
        PostgresEventStore::connect(url.expose_str(), 8, listen, metrics.clone())
    })
    .await?;
    Some(Arc::new(store))
}

/// The shared read models at `url`, once PostgreSQL answers; `None` when stopping first.
async fn connect_read_models(
    url: &Secret,
    ready: &Readiness,
    stopped: watch::Receiver<bool>,
) -> Option<ReadModelDb> {
    let what = format!("the read models at {}", describe_database(url.expose_str()));
    connect_with_retry("read-model database", &what, ready, stopped, || {
        ReadModelDb::connect(url.expose_str())
    })
    .await
}

/// Ready once every projection in `names` has applied the log as it was when this was called.
fn ready_when_caught_up(
    store: Arc<dyn EventStore>,
    read_models: ReadModelDb,
    names: Vec<&'static str>,
    ready: Readiness,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let Ok(head) = store.head().await else { return };
        loop {
            match read_models.checkpoints(&names).await {
                Ok(at) if at.iter().all(|p| *p >= head) => {
                    ready.set("read models", Ok(()));
                    return;
                }
                Ok(at) => {
                    let behind = at
                        .iter()
                        .map(|p| head.saturating_sub(*p))
                        .max()
                        .unwrap_or(0);
                    ready.set(
                        "read models",
                        Err(format!("catching up with the log: {behind} events behind")),
                    );
                }
                Err(e) => ready.set(
                    "read models",
                    Err(format!("cannot read the checkpoints: {e}")),
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    });
}

/// The Kafka feed of the whole log into this process's bus, started as soon as the broker
/// answers; `None` when stopping first.
async fn start_feed(
    kafka: &KafkaConfig,
    store: &Arc<dyn EventStore>,
    registry: &Registry,
    service: Service,
    ready: &Readiness,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let metrics = FeedMetrics::new(registry)?;
    let mut attempt = 0;
    loop {
        match KafkaFeed::start(kafka, store.clone(), metrics.clone(), service.name()).await {
            Ok(feed) => {
                ready.set("kafka", Ok(()));
                return Ok(Some(tokio::spawn(feed.run(stopped))));
            }
            Err(e) => {
                ready.set(
                    "kafka",
                    Err(format!("cannot reach Kafka at {}: {e}", kafka.brokers)),
                );
                if !backoff(&mut attempt, &mut stopped).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Re-checks PostgreSQL, Kafka and (for the services that read or write originals) the blob
/// store every few seconds for `/readyz`.
fn watch_dependencies(
    store: Arc<dyn EventStore>,
    kafka: KafkaConfig,
    database: String,
    blobs: Option<(BlobStore, String)>,
    read_models: Option<(Secret, String)>,
    ready: Readiness,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let producer =
        hub_events::kafka::probe_client(&kafka).context("cannot create the Kafka client")?;
    Ok(tokio::spawn(async move {
        loop {
            let pg = match tokio::time::timeout(Duration::from_secs(3), store.head()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("cannot reach PostgreSQL at {database}: {e}")),
                Err(_) => Err(format!(
                    "PostgreSQL at {database} does not answer within 3 s"
                )),
            };
            ready.set("postgres", pg);
            ready.set(
                "kafka",
                hub_events::kafka::probe(&producer, &kafka.brokers, Duration::from_secs(3)).await,
            );
            if let Some((blobs, at)) = &blobs {
                let status = match tokio::time::timeout(Duration::from_secs(3), blobs.probe()).await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("cannot reach the blob store at {at}: {e}")),
                    Err(_) => Err(format!("the blob store at {at} does not answer within 3 s")),
                };
                ready.set("blob store", status);
            }
            if let Some((url, at)) = &read_models {
                let probe = ReadModelDb::probe(url.expose_str());
                let status = match tokio::time::timeout(Duration::from_secs(3), probe).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("cannot reach the read models at {at}: {e}")),
                    Err(_) => Err(format!("the read models at {at} do not answer within 3 s")),
                };
                ready.set("read-model database", status);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }))
}

fn require(value: &Option<Secret>, key: &str, env: &str, why: &str) -> anyhow::Result<()> {
    if value.is_none() {
        bail!("`hub run` needs `{key}` ({env}): {why}");
    }
    Ok(())
}

pub async fn run(service: Service, config: Config) -> anyhow::Result<()> {
    let Some(url) = config.database_url.clone() else {
        bail!(
            "`hub run` needs the PostgreSQL event log: set HUB_DATABASE_URL (config key \
             `database_url`), e.g. postgres://hub:PASSWORD@db:5432/hub"
        );
    };
    let Some(kafka) = config.kafka.clone() else {
        bail!(
            "`hub run` needs Kafka: set HUB_KAFKA_BROKERS (config key `kafka_brokers`), e.g. \
             kafka-0:9092,kafka-1:9092"
        );
    };
    if matches!(service, Service::Gateway | Service::Sharing) {
        require(
            &config.patient_key,
            "patient_key",
            "HUB_PATIENT_KEY",
            "every process must key regional patient ids alike",
        )?;
    }
    if service == Service::Gateway {
        require(
            &config.deid_key,
            "deid_key",
            "HUB_DEID_KEY",
            "every gateway must derive de-identified UIDs alike",
        )?;
        if config.jwt_secret.is_none() && config.jwt_jwks.is_none() {
            bail!(
                "`hub run gateway` needs the bearer-token keys: set HUB_JWT_SECRET (HS256) or \
                 HUB_JWT_JWKS (RS256); a per-process random secret would refuse tokens of the \
                 other replicas"
            );
        }
    }

    let registry = Registry::new();
    let ready = Readiness::default();
    // Everything this service will need is listed from the start, so it is never ready early.
    ready.set("postgres", Err("connecting".into()));
    ready.set("kafka", Err("waiting for PostgreSQL first".into()));
    if service == Service::Projector {
        require(
            &config.read_models_url,
            "read_models_url",
            "HUB_READ_MODELS_URL",
            "the projector fills the PostgreSQL read models the gateways read",
        )?;
    }
    let shared_read_models = match service {
        Service::Gateway | Service::Projector => config.read_models_url.clone(),
        _ => None,
    };
    if shared_read_models.is_some() {
        ready.set("read-model database", Err("connecting".into()));
    }
    match service {
        Service::Gateway | Service::Projector => {
            ready.set("read models", Err("waiting for the log".into()))
        }
        Service::Relay => ready.set("relay", Err("waiting for the log".into())),
        _ => {}
    }
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        let _ = stop.send(true);
    });

    // Health endpoints from the first moment; the gateway later serves its own router here.
    let listener = std::net::TcpListener::bind(config.http)
        .with_context(|| format!("cannot listen on {} (config key `http`)", config.http))?;
    listener.set_nonblocking(true)?;
    let early = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
    let (early_stop, early_stopped) = oneshot::channel::<()>();
    let early_server = {
        let router = health_router(ready.clone(), registry.clone(), service);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _ = axum::serve(early, router)
                .with_graceful_shutdown(async move {
                    tokio::select! {
                        _ = early_stopped => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                })
                .await;
        })
    };
    tracing::info!(
        service = service.name(),
        http = %config.http,
        "hub run: starting (distributed: PostgreSQL, Kafka)"
    );

    let database = describe_database(url.expose_str());
    // Only the relay follows appends of other processes through NOTIFY; everybody else gets
    // them from Kafka.
    let Some(store) = connect_store(
        &url,
        service == Service::Relay,
        StoreMetrics::new(&registry)?,
        &ready,
        stopped.clone(),
    )
    .await
    else {
        return Ok(());
    };
    let blobs = match service {
        Service::Gateway | Service::Ingest | Service::Inference => {
            ready.set("blob store", Err("not checked yet".into()));
            Some((parts::blobs(&config)?, parts::describe_blobs(&config)))
        }
        Service::Relay | Service::Sharing | Service::Projector => None,
    };
    let checks = watch_dependencies(
        store.clone(),
        kafka.clone(),
        database,
        blobs,
        shared_read_models.clone().map(|url| {
            let at = describe_database(url.expose_str());
            (url, at)
        }),
        ready.clone(),
        stopped.clone(),
    )?;

    match service {
        Service::Relay => {
            let relay = Relay::new(
                store.clone(),
                kafka.clone(),
                "relay",
                RelayMetrics::new(&registry)?,
            )?;
            let (status, mut status_rx) = watch::channel(Err("starting".to_string()));
            let forward = {
                let ready = ready.clone();
                tokio::spawn(async move {
                    loop {
                        let s = status_rx.borrow_and_update().clone();
                        ready.set("relay", s);
                        if status_rx.changed().await.is_err() {
                            return;
                        }
                    }
                })
            };
            if let Err(e) = relay.run(status, stopped.clone()).await {
                tracing::error!(error = %e, "relay stopped");
            }
            forward.abort();
        }
        Service::Gateway => {
            let Some(feed) =
                start_feed(&kafka, &store, &registry, service, &ready, stopped.clone()).await?
            else {
                return Ok(());
            };
            let projection_metrics = ProjectionMetrics::new(&registry)?;
            let (read_models, read_side) = match &shared_read_models {
                // The projector fills them; this gateway only reads.
                Some(url) => {
                    let Some(db) = connect_read_models(url, &ready, stopped.clone()).await else {
                        return Ok(());
                    };
                    let side =
                        parts::follow_projections(&db, &projection_metrics, &stopped).await?;
                    (db, side)
                }
                None => {
                    let db = crate::embedded::open_read_models(&config).await?;
                    let side = parts::start_projections(&store, &db, &projection_metrics, &stopped);
                    (db, side)
                }
            };
            let (access, follower) = parts::start_access(&config, &store, &stopped).await?;
            ready.set("read models", Err("catching up with the log".into()));
            {
                // Ready once the read models and the policy facts include the log as it was at
                // start (a new pod rebuilds its read models first).
                let (ready, store, access) = (ready.clone(), store.clone(), access.clone());
                let (mut catalog, mut index) = (read_side.catalog.clone(), read_side.index.clone());
                tokio::spawn(async move {
                    let Ok(head) = store.head().await else { return };
                    let _ = catalog.wait_for(|p| *p >= head).await;
                    let _ = index.wait_for(|p| *p >= head).await;
                    while access.applied() < head {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    ready.set("read models", Ok(()));
                });
            }
            let sharing = Sharing::new(
                store.clone(),
                access.clone(),
                PatientKey::new(parts::secret(&config.patient_key, &config, "patient.key")?),
            )
            .with_search_index(read_side.index.clone());
            let consults = Consults::new(store.clone(), access.clone())
                .with_search_index(read_side.index.clone());
            let blobs = parts::blobs(&config)?;
            let ingest = Ingest::new(store.clone(), blobs, config.stow_max_bytes)
                .with_visibility(read_side.catalog.clone());
            let sweeper = parts::start_sweeps(ingest.clone(), &stopped);
            let state = GatewayState {
                store: store.clone(),
                registry: registry.clone(),
                projection_metrics,
                projections: Arc::new(read_side.names.clone()),
                read_models,
                ingest: Some(ingest),
                auth: parts::auth(&config, access.clone()).await?,
                sharing: Some(sharing),
                consults: Some(consults),
                consult_metrics: Some(ConsultMetrics::new(&registry)?),
                deid: DeidSecret(Arc::new(parts::secret(
                    &config.deid_key,
                    &config,
                    "deid.key",
                )?)),
                public_url: config.public_url.clone(),
            };
            let _ = early_stop.send(());
            let _ = early_server.await;
            let router = hub_gateway::router(state).merge(readyz_router(ready.clone()));
            let mut stopping = stopped.clone();
            hub_gateway::server::serve_router(
                tokio::net::TcpListener::from_std(listener)?,
                router,
                config.http_limits(),
                async move {
                    let _ = stopping.wait_for(|s| *s).await;
                },
            )
            .await
            .context("HTTP server failed")?;
            let _ = follower.await;
            let _ = sweeper.await;
            for r in read_side.runners {
                let _ = r.await;
            }
            let _ = feed.await;
        }
        Service::Projector => {
            let Some(feed) =
                start_feed(&kafka, &store, &registry, service, &ready, stopped.clone()).await?
            else {
                return Ok(());
            };
            let Some(url) = &shared_read_models else {
                return Ok(());
            };
            let Some(read_models) = connect_read_models(url, &ready, stopped.clone()).await else {
                return Ok(());
            };
            let projection_metrics = ProjectionMetrics::new(&registry)?;
            let read_side =
                parts::start_projections(&store, &read_models, &projection_metrics, &stopped);
            ready_when_caught_up(
                store.clone(),
                read_models,
                read_side.names.clone(),
                ready.clone(),
                stopped.clone(),
            );
            // The lag gauges on /metrics (the gateway refreshes its own when scraped).
            {
                let (store, names, mut stopped) =
                    (store.clone(), read_side.names.clone(), stopped.clone());
                tokio::spawn(async move {
                    loop {
                        if let Ok(head) = store.head().await {
                            projection_metrics.refresh_lag(head, &names);
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = stopped.wait_for(|s| *s) => return,
                        }
                    }
                });
            }
            tracing::info!(projections = ?read_side.names, "projector: applying the log to the shared read models");
            for r in read_side.runners {
                let _ = r.await;
            }
            let _ = feed.await;
        }
        Service::Ingest => {
            let Some(feed) =
                start_feed(&kafka, &store, &registry, service, &ready, stopped.clone()).await?
            else {
                return Ok(());
            };
            let blobs = parts::blobs(&config)?;
            let ingest = Ingest::new(store.clone(), blobs, config.stow_max_bytes);
            let sweeper = parts::start_sweeps(ingest.clone(), &stopped);
            // No read models here: C-FIND is refused with the reason (query the gateway's QIDO-RS).
            let dimse = parts::start_dimse(&config, ingest, None, &stopped).await?;
            let stabilizer = parts::start_stabilizer(&config, &store, &stopped);
            tracing::info!(dimse = %config.dimse, ae_title = %config.dimse_ae_title, "ingest: DIMSE SCP and stabilizer running");
            let _ = dimse.await;
            let _ = stabilizer.await;
            let _ = sweeper.await;
            let _ = feed.await;
        }
        Service::Sharing => {
            let Some(feed) =
                start_feed(&kafka, &store, &registry, service, &ready, stopped.clone()).await?
            else {
                return Ok(());
            };
            let (access, follower) = parts::start_access(&config, &store, &stopped).await?;
            let sharing = Sharing::new(
                store.clone(),
                access,
                PatientKey::new(parts::secret(&config.patient_key, &config, "patient.key")?),
            );
            tracing::info!("sharing: the expiry sweeper is running");
            sharing.run_expiry(stopped.clone()).await;
            let _ = follower.await;
            let _ = feed.await;
        }
        Service::Inference => {
            let inference = crate::inference::for_group(&config, store.clone(), &registry)
                .map_err(anyhow::Error::msg)?;
            let group = format!("{}-inference", kafka.topic_prefix);
            let metrics = GroupMetrics::new(&registry)?;
            let mut attempt = 0;
            let mut waiting = stopped.clone();
            let consumer = loop {
                match GroupConsumer::join(&kafka, &group, &[Topic::Study], metrics.clone()).await {
                    Ok(c) => break c,
                    Err(e) => {
                        ready.set(
                            "kafka",
                            Err(format!(
                                "cannot join {group} at Kafka {}: {e}",
                                kafka.brokers
                            )),
                        );
                        if !backoff(&mut attempt, &mut waiting).await {
                            return Ok(());
                        }
                    }
                }
            };
            tracing::info!(%group, "inference: consuming stabilized studies");
            consumer
                .run(
                    move |event| {
                        let inference = inference.clone();
                        async move { inference.on_event(&event).await }
                    },
                    stopped.clone(),
                )
                .await;
        }
    }
    let _ = checks.await;
    tracing::info!(service = service.name(), "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_described_without_credentials() {
        assert_eq!(
            describe_database("postgres://hub:s3cret@db.example:5432/hub?sslmode=require"),
            "db.example:5432/hub"
        );
        assert_eq!(describe_database("postgres://db:5432/hub"), "db:5432/hub");
    }

    #[test]
    fn readiness_is_false_until_every_check_is_ok_and_names_what_is_missing() {
        let ready = Readiness::default();
        assert!(!ready.report().0, "nothing checked yet is not ready");
        ready.set("postgres", Ok(()));
        ready.set("kafka", Err("cannot reach Kafka at k:9092".into()));
        let (ok, body) = ready.report();
        assert!(!ok);
        assert_eq!(body["checks"]["kafka"], "cannot reach Kafka at k:9092");
        ready.set("kafka", Ok(()));
        assert!(ready.report().0);
    }
}
