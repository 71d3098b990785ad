//! The hub's HTTP front door. In this version: health, Prometheus metrics and a read-only view of
//! the event log. Handlers are small and typed; every error leaves as an RFC 9457 problem
//! document from [`problem::Problem`], the one place that maps errors to HTTP statuses.
//!
//! The gateway reads the log and the read models; it never appends on its own behalf and never
//! touches a read model's tables (projections own them).

pub mod access;
pub mod auth;
pub mod consult_api;
pub mod deid;
pub mod dicomweb;
pub mod events_api;
pub mod extract;
pub mod findings_api;
pub mod jpeg_ls;
pub mod problem;
pub mod rendered;
pub mod server;
pub mod sharing_api;
pub mod token;
pub mod wado_uri;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hub_events::EventStore;
use hub_projections::ProjectionMetrics;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;

use crate::problem::Problem;

/// What the handlers need, passed explicitly (no globals).
#[derive(Clone)]
pub struct GatewayState {
    pub store: Arc<dyn EventStore>,
    pub registry: Registry,
    pub projection_metrics: ProjectionMetrics,
    /// Names of the projections this process runs (for their lag gauges).
    pub projections: Arc<Vec<&'static str>>,
    /// The read models the queries are answered from.
    pub read_models: hub_projections::ReadModelDb,
    /// Ingest (STOW-RS) and the blob store; `None` in a process that does not run it.
    pub ingest: Option<hub_ingest::Ingest>,
    /// The one authorization point.
    pub auth: auth::Auth,
    /// Registry, sharing, consent and break-the-glass commands; `None` in a process that does
    /// not run them.
    pub sharing: Option<hub_sharing::Sharing>,
    /// Consultations and reports; `None` in a process that does not run them.
    pub consults: Option<hub_consult::Consults>,
    /// The consultation gauges, refreshed at scrape time.
    pub consult_metrics: Option<hub_consult::ConsultMetrics>,
    /// The key de-identified shares are served with.
    pub deid: deid::DeidSecret,
    /// Where clients reach the hub (`public_url`, no trailing slash): the start of every
    /// RetrieveURL and BulkDataURI. `None`: `http://` and the request's Host header.
    pub public_url: Option<String>,
}

pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/events", get(events_api::list_events))
        .route(
            "/institutions",
            post(sharing_api::register_institution).get(sharing_api::list_institutions),
        )
        .route("/alliances", post(sharing_api::register_alliance))
        .route("/alliances/{alliance}", get(sharing_api::alliance_view))
        .route("/alliances/{alliance}/members", post(sharing_api::join_alliance))
        .route(
            "/alliances/{alliance}/members/{institution}",
            delete(sharing_api::leave_alliance),
        )
        .route("/patients/links", post(sharing_api::link_patient))
        .route(
            "/patients/{regional}/consents",
            post(sharing_api::record_consent).get(sharing_api::list_consents),
        )
        .route("/patients/{regional}/studies", get(sharing_api::patient_history))
        .route("/consents/{consent}", delete(sharing_api::withdraw_consent))
        .route(
            "/shares",
            post(sharing_api::grant_share).get(sharing_api::list_shares),
        )
        .route("/shares/{share}/revoke", post(sharing_api::revoke_share))
        .route("/studies/{study}/break-glass", post(sharing_api::break_glass))
        .route("/studies/{study}/findings", get(findings_api::study_findings))
        .route("/audit", get(sharing_api::audit))
        .route("/views/hospital", get(sharing_api::hospital_view))
        .route("/experts", post(consult_api::register_expert))
        .route(
            "/experts/{institution}/{expert}/calendar",
            get(consult_api::calendar),
        )
        .route("/consults", post(consult_api::request))
        .route("/consults/queue", get(consult_api::queue))
        .route("/consults/turnaround", get(consult_api::turnaround))
        .route("/consults/{consult}", get(consult_api::get_consult))
        .route("/consults/{consult}/schedule", post(consult_api::schedule))
        .route("/consults/{consult}/reschedule", post(consult_api::reschedule))
        .route("/consults/{consult}/accept", post(consult_api::accept))
        .route("/consults/{consult}/decline", post(consult_api::decline))
        .route("/consults/{consult}/cancel", post(consult_api::cancel))
        .route("/consults/{consult}/approve", post(consult_api::approve))
        .route("/consults/{consult}/complete", post(consult_api::complete))
        .route(
            "/studies/{study}/reports",
            get(consult_api::list_reports).post(consult_api::draft_report),
        )
        .route(
            "/studies/{study}/reports/{report}/sign",
            post(consult_api::sign_report),
        )
        .route(
            "/studies/{study}/reports/{report}/amend",
            post(consult_api::amend_report),
        )
        .route(
            "/dicom-web/studies",
            post(dicomweb::stow_studies).get(dicomweb::search_studies),
        )
        .route("/wado", get(wado_uri::wado))
        .route("/dicom-web/series", get(dicomweb::search_all_series))
        .route("/dicom-web/instances", get(dicomweb::search_all_instances))
        .route(
            "/dicom-web/studies/{study}",
            post(dicomweb::stow_study).get(dicomweb::retrieve_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series",
            get(dicomweb::search_series),
        )
        .route(
            "/dicom-web/studies/{study}/metadata",
            get(dicomweb::metadata_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/metadata",
            get(dicomweb::metadata_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(dicomweb::metadata_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(dicomweb::retrieve_frames),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
            get(dicomweb::retrieve_bulkdata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(dicomweb::rendered_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
            get(dicomweb::rendered_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(dicomweb::rendered_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
            get(dicomweb::rendered_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/thumbnail",
            get(dicomweb::rendered_resource),
        )
        .route("/dicom-web/studies/{study}/thumbnail", get(dicomweb::rendered_resource))
        .route(
            "/dicom-web/studies/{study}/series/{series}",
            get(dicomweb::retrieve_resource),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances",
            get(dicomweb::search_instances),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            get(dicomweb::retrieve_resource),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn healthz(State(state): State<GatewayState>) -> Result<Response, Problem> {
    let head = state
        .store
        .head()
        .await
        .map_err(|e| Problem::unavailable(format!("the event store does not answer: {e}")))?;
    Ok(axum::Json(json!({
        "status": "ok",
        "event_store": state.store.backend(),
        "head_position": head,
    }))
    .into_response())
}

async fn metrics(State(state): State<GatewayState>) -> Result<Response, Problem> {
    // Lag is head minus applied position, taken now rather than whenever a runner last moved.
    if let Ok(head) = state.store.head().await {
        state
            .projection_metrics
            .refresh_lag(head, &state.projections);
    }
    if let (Some(consults), Some(metrics)) = (&state.consults, &state.consult_metrics) {
        metrics.refresh(&consults.all());
    }
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&state.registry.gather(), &mut body)
        .map_err(|e| Problem::internal(format!("encoding metrics failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_owned(),
        )],
        body,
    )
        .into_response())
}

async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

/// Serves the gateway on `listener` within `limits` until `shutdown` completes, then drains
/// open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    limits: server::ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_router(listener, router(state), limits, shutdown).await
}
