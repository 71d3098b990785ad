//! The REST API of the registry, sharing, consent, break-the-glass and audit: thin handlers over
//! [`hub_sharing::Sharing`] (commands) and the read models (views).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_policies::{Act, Subject, View};
use hub_projections::{AccessIndex, AuditTrail, StudyCatalog, StudyQuery};
use hub_sharing::{
    AllianceRequest, BreakGlassRequest, GrantRequest, InstitutionRequest, LinkRequest, Sharing,
    SharingError,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::GatewayState;
use crate::access::{searcher, study_ref};
use crate::extract::{Json as JsonBody, Path, Query};
use crate::problem::Problem;
use hub_application::Shown;
use hub_projections::study_catalog::CatalogStudy;

impl From<SharingError> for Problem {
    fn from(e: SharingError) -> Problem {
        match e {
            SharingError::BadRequest { .. } => Problem::bad_request(e.to_string()),
            SharingError::Forbidden(m) => Problem::new(StatusCode::FORBIDDEN, "Forbidden", m),
            SharingError::NotFound(m) => Problem::not_found(m),
            SharingError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "Conflict", m),
            SharingError::Unavailable(m) => Problem::unavailable(m),
        }
    }
}

fn sharing(state: &GatewayState) -> Result<&Sharing, Problem> {
    state
        .sharing
        .as_ref()
        .ok_or_else(|| Problem::unavailable("this process does not run the sharing service"))
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

pub async fn register_institution(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InstitutionRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let id = req.institution_id.clone();
    sharing(&state)?.register_institution(&subject, req).await?;
    Ok(created(json!({ "institution_id": id })))
}

pub async fn list_institutions(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    state.auth.identify(&headers)?;
    let rows = AccessIndex::institutions(state.read_models.pool())
        .await
        .map_err(|e| Problem::unavailable(format!("access index: {e}")))?;
    Ok(Json(rows).into_response())
}

pub async fn register_alliance(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AllianceRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let id = req.alliance_id.clone();
    sharing(&state)?.register_alliance(&subject, req).await?;
    Ok(created(json!({ "alliance_id": id })))
}

#[derive(Deserialize)]
pub struct MemberRequest {
    pub institution_id: String,
}

pub async fn join_alliance(
    State(state): State<GatewayState>,
    Path(alliance): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<MemberRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    sharing(&state)?
        .change_membership(&subject, &alliance, &req.institution_id, true)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn leave_alliance(
    State(state): State<GatewayState>,
    Path((alliance, institution)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    sharing(&state)?
        .change_membership(&subject, &alliance, &institution, false)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The per-alliance view: members, and how much the alliance shares.
pub async fn alliance_view(
    State(state): State<GatewayState>,
    Path(alliance): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let facts = state.auth.access().with_facts(|f| {
        f.alliance(&alliance).map(|a| {
            (
                a.name.clone(),
                a.lead_institution.clone(),
                a.members.clone(),
            )
        })
    });
    let Some((name, lead, members)) = facts else {
        return Err(Problem::not_found(format!("no alliance {alliance}")));
    };
    if !members.contains(&subject.institution)
        && state.auth.require(&subject, Act::ManageRegistry).is_err()
    {
        return Err(Problem::not_found(format!("no alliance {alliance}")));
    }
    let now = state.auth.access().now();
    let counts = AccessIndex::alliance_counts(state.read_models.pool(), &alliance, now)
        .await
        .map_err(|e| Problem::unavailable(format!("access index: {e}")))?;
    Ok(Json(json!({
        "alliance_id": alliance,
        "name": name,
        "lead_institution": lead,
        "members": members,
        "studies_shared_by_policy": counts.by_policy,
        "active_shares_to_alliance": counts.active_shares,
    }))
    .into_response())
}

pub async fn link_patient(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LinkRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let regional = sharing(&state)?.link_patient(&subject, req).await?;
    Ok(created(json!({ "regional_patient_id": regional })))
}

#[derive(Deserialize)]
pub struct ConsentRequest {
    pub policy: String,
}

pub async fn record_consent(
    State(state): State<GatewayState>,
    Path(regional): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ConsentRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let id = sharing(&state)?
        .record_consent(&subject, &regional, &req.policy)
        .await?;
    Ok(created(json!({ "consent_id": id })))
}

/// The active consents of a patient, for the patient and the institutions where they are linked.
pub async fn list_consents(
    State(state): State<GatewayState>,
    Path(regional): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let consents = sharing(&state)?.consents(&subject, &regional).await?;
    Ok(Json(json!({ "regional_patient_id": regional, "consents": consents })).into_response())
}

#[derive(Deserialize, Default)]
pub struct ReasonRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

pub async fn withdraw_consent(
    State(state): State<GatewayState>,
    Path(consent): Path<uuid::Uuid>,
    headers: HeaderMap,
    Query(q): Query<ReasonRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    sharing(&state)?
        .withdraw_consent(&subject, consent, q.reason)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller's institution's study `uid`, or 404.
async fn own_study(
    state: &GatewayState,
    subject: &Subject,
    uid: &str,
) -> Result<hub_policies::StudyRef, Problem> {
    StudyCatalog::holders(state.read_models.pool(), uid, &subject.institution)
        .await
        .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?
        .into_iter()
        .find(|s| s.institution == subject.institution)
        .map(|s| study_ref(&s))
        .ok_or_else(|| Problem::not_found(format!("no study {uid} at {}", subject.institution)))
}

pub async fn grant_share(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<GrantRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    // The role comes first and does not depend on the study, so a refusal names no study.
    state.auth.require_own(&subject, Act::Share)?;
    let study = own_study(&state, &subject, &req.study_uid).await?;
    let id = sharing(&state)?.grant(&subject, &study, req).await?;
    Ok(created(json!({ "share_id": id })))
}

pub async fn revoke_share(
    State(state): State<GatewayState>,
    Path(share): Path<uuid::Uuid>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let reason = req.reason.unwrap_or_default();
    sharing(&state)?.revoke(&subject, share, reason).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct StudyParam {
    pub study: String,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub offset: Option<u32>,
}

/// The shares of one of the caller's institution's studies (staff who may share it).
pub async fn list_shares(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(q): Query<StudyParam>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    state.auth.require_own(&subject, Act::Share)?;
    let study = own_study(&state, &subject, &q.study).await?;
    let rows = AccessIndex::shares_of(state.read_models.pool(), &study.owner, &study.study_uid)
        .await
        .map_err(|e| Problem::unavailable(format!("access index: {e}")))?;
    Ok(Json(rows).into_response())
}

pub async fn break_glass(
    State(state): State<GatewayState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<BreakGlassRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    // Who may break the glass does not depend on the study: asked before the study is looked
    // up, so a patient, an analyst or a service gets the same answer for every Study UID.
    state.auth.require(&subject, Act::BreakGlass)?;
    let holders = StudyCatalog::holders(state.read_models.pool(), &study, &subject.institution)
        .await
        .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?;
    let Some(target) = holders.first() else {
        return Err(Problem::not_found(format!("no study {study}")));
    };
    let until = sharing(&state)?
        .break_glass(&subject, &study_ref(target), req)
        .await?;
    Ok(created(json!({
        "study_uid": study,
        "owner": target.institution,
        "expires_at": until.to_rfc3339(),
    })))
}

/// Who saw a study of the caller's institution (its hospital admin).
pub async fn audit(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(q): Query<StudyParam>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    state.auth.require_own(&subject, Act::ReadAudit)?;
    let rows = AuditTrail::for_study(
        &state.read_models,
        &subject.institution,
        &q.study,
        q.limit.unwrap_or(1000).min(10_000),
        q.offset.unwrap_or(0),
    )
    .await
    .map_err(|e| Problem::unavailable(format!("audit trail: {e}")))?;
    Ok(Json(rows).into_response())
}

#[derive(Deserialize, Default)]
pub struct PageParams {
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub offset: Option<u32>,
}

/// A row of the REST views. A study seen only de-identified shows what its DICOMweb view shows:
/// the mapped UID and the scope, never its owner, date or patient.
fn study_row(
    state: &GatewayState,
    subject: &Subject,
    shown: &Shown<CatalogStudy>,
) -> Result<Value, Problem> {
    let s = &shown.row;
    if let View::Deidentified(_) = shown.view {
        return Ok(json!({
            "study_uid": crate::deid::map_uid(state, shown.view, &s.study_uid),
            "modalities": s.modalities,
            "instances": s.instance_count,
            "scope": "deidentified",
            "own": false,
        }));
    }
    let images = state
        .auth
        .access()
        .decide(subject, &study_ref(s), None, Act::ReadImages)
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(json!({
        "owner": s.institution,
        "study_uid": s.study_uid,
        "study_date": s.study_date,
        "modalities": s.modalities,
        "instances": s.instance_count,
        // Metadata seen in full, images perhaps only through a de-identified share.
        "scope": match (images.permit, images.view) {
            (true, View::Full) => "images",
            (true, View::Deidentified(_)) => "deidentified",
            (false, _) => "metadata",
        },
        "own": s.institution == subject.institution,
        "patient_id": s.patient_id,
        "accession_number": s.accession_number,
    }))
}

/// Lists studies the caller may see, with the scope each is shared in.
async fn studies_view(
    state: &GatewayState,
    subject: &Subject,
    query: StudyQuery,
) -> Result<Response, Problem> {
    let (studies, more) = searcher(state).studies(subject, &query).await?;
    let rows = studies
        .iter()
        .map(|s| study_row(state, subject, s))
        .collect::<Result<Vec<_>, _>>()?;
    crate::access::record_query(
        state,
        subject,
        studies
            .iter()
            .map(|s| hub_events::catalog::AccessedStudy {
                owner: s.row.institution.clone(),
                study_uid: s.row.study_uid.clone(),
            })
            .collect(),
    )
    .await?;
    Ok(Json(json!({ "studies": rows, "more": more })).into_response())
}

fn page(p: &PageParams) -> StudyQuery {
    StudyQuery {
        limit: p.limit.unwrap_or(100).min(1000),
        offset: p.offset.unwrap_or(0),
        ..StudyQuery::default()
    }
}

/// The per-hospital view: the caller's own studies and those shared with it, with their scope.
pub async fn hospital_view(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(p): Query<PageParams>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    studies_view(&state, &subject, page(&p)).await
}

/// One patient's history across institutions, as far as the caller may see it (a patient sees
/// all of their own).
pub async fn patient_history(
    State(state): State<GatewayState>,
    Path(regional): Path<String>,
    headers: HeaderMap,
    Query(p): Query<PageParams>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let query = StudyQuery {
        regional_patient_id: Some(regional),
        ..page(&p)
    };
    studies_view(&state, &subject, query).await
}
