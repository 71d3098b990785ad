//! The REST API of consultations and diagnosis reports: thin handlers over
//! [`hub_consult::Consults`] (commands, calendar, queues) and [`hub_consult::Reports`].

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_consult::{
    AcceptRequest, AmendRequest, CompleteRequest, ConsultError, ConsultRequest, Consults,
    DraftRequest, ExpertRequest, ReasonRequest, Reports, SlotRequest, turnaround_by_institution,
};
use hub_events::catalog::AccessAction;
use hub_policies::{Act, Consultation, Role, StudyRef, Subject};
use hub_projections::StudyCatalog;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::GatewayState;
use crate::access::{Below, study_ref};
use crate::extract::{Json as JsonBody, Path, Query};
use crate::problem::Problem;

impl From<ConsultError> for Problem {
    fn from(e: ConsultError) -> Problem {
        match e {
            ConsultError::BadRequest { .. } => Problem::bad_request(e.to_string()),
            ConsultError::Forbidden(m) => Problem::new(StatusCode::FORBIDDEN, "Forbidden", m),
            ConsultError::NotFound(m) => Problem::not_found(m),
            ConsultError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "Conflict", m),
            ConsultError::Unavailable(m) => Problem::unavailable(m),
        }
    }
}

fn consults(state: &GatewayState) -> Result<&Consults, Problem> {
    state
        .consults
        .as_ref()
        .ok_or_else(|| Problem::unavailable("this process does not run the consultation service"))
}

fn show(c: &Consultation) -> Value {
    json!({
        "consult_id": c.consult_id,
        "study_uid": c.study_uid,
        "kind": c.kind,
        "state": c.state,
        "requesting_institution": c.requesting_institution,
        "requested_by": c.requested_by,
        "expert_institution": c.expert_institution,
        "expert": c.expert,
        "specialty": c.specialty,
        "urgency": c.urgency,
        "question": c.question,
        "participants": c.participants,
        "starts_at": c.slot.map(|s| s.starts_at),
        "ends_at": c.slot.map(|s| s.ends_at),
        "time_zone": c.time_zone,
        "requested_at": c.requested_at,
        "reason": c.reason,
        "report_id": c.report_id,
        "report_signed_at": c.report_signed_at,
        "turnaround_seconds": c.turnaround_seconds(),
    })
}

/// The holder of `study_uid` whose copy the caller may read (their own institution first).
async fn readable(
    state: &GatewayState,
    subject: &Subject,
    study_uid: &str,
    act: Act,
) -> Result<Option<StudyRef>, Problem> {
    let holders = StudyCatalog::holders(state.read_models.pool(), study_uid, &subject.institution)
        .await
        .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?;
    for study in holders {
        let study = study_ref(&study);
        let decision = state
            .auth
            .access()
            .decide(subject, &study, None, act)
            .map_err(|e| Problem::unavailable(e.to_string()))?;
        if decision.permit {
            return Ok(Some(study));
        }
    }
    Ok(None)
}

pub async fn request(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ConsultRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let study = readable(&state, &subject, &req.study_uid, Act::ReadMetadata).await?;
    let id = consults(&state)?
        .request(&subject, study.as_ref(), req)
        .await?;
    let c = consults(&state)?.get(&subject, id)?;
    Ok((StatusCode::CREATED, Json(show(&c))).into_response())
}

pub async fn get_consult(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    Ok(Json(show(&consults(&state)?.get(&subject, id)?)).into_response())
}

/// The consultation after a command, as the caller now sees it.
fn after(state: &GatewayState, subject: &Subject, id: Uuid) -> Result<Response, Problem> {
    Ok(Json(show(&consults(state)?.get(subject, id)?)).into_response())
}

pub async fn schedule(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<SlotRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    consults(&state)?.schedule(&subject, id, req, false).await?;
    after(&state, &subject, id)
}

pub async fn reschedule(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<SlotRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    consults(&state)?.schedule(&subject, id, req, true).await?;
    after(&state, &subject, id)
}

pub async fn accept(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    req: Option<JsonBody<AcceptRequest>>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let req = req.map(|JsonBody(r)| r).unwrap_or_default();
    consults(&state)?.accept(&subject, id, req).await?;
    after(&state, &subject, id)
}

pub async fn decline(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    consults(&state)?.decline(&subject, id, req).await?;
    after(&state, &subject, id)
}

pub async fn cancel(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    consults(&state)?.cancel(&subject, id, req).await?;
    after(&state, &subject, id)
}

/// The study's owner approves a consultation another institution requested.
pub async fn approve(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    consults(&state)?.approve(&subject, id).await?;
    after(&state, &subject, id)
}

pub async fn complete(
    State(state): State<GatewayState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    req: Option<JsonBody<CompleteRequest>>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let req = req.map(|JsonBody(r)| r).unwrap_or_default();
    consults(&state)?.complete(&subject, id, req).await?;
    after(&state, &subject, id)
}

#[derive(Deserialize)]
pub struct QueueParams {
    /// incoming (default: asked of the caller's institution) | outgoing
    #[serde(default)]
    pub direction: Option<String>,
}

/// The caller's institution's incoming or outgoing consultations, with their states.
pub async fn queue(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(p): Query<QueueParams>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    if !matches!(
        subject.role,
        Role::HospitalAdmin | Role::Radiologist | Role::Physician
    ) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("a {} has no consultation queue", subject.role),
        ));
    }
    let outgoing = match p.direction.as_deref() {
        None | Some("incoming") => false,
        Some("outgoing") => true,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "direction: unknown value '{other}' (expected incoming or outgoing)"
            )));
        }
    };
    let list = consults(&state)?.queue(&subject.institution, outgoing);
    Ok(Json(json!({
        "institution": subject.institution,
        "direction": if outgoing { "outgoing" } else { "incoming" },
        "consults": list.iter().map(show).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// An expert's booked consultations; the expert's institution's staff may read it.
pub async fn calendar(
    State(state): State<GatewayState>,
    Path((institution, expert)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    if subject.institution != institution || subject.role == Role::Patient {
        return Err(Problem::not_found(format!(
            "no calendar of {expert} at {institution} you may read"
        )));
    }
    let list = consults(&state)?.calendar(&institution, &expert);
    Ok(Json(json!({
        "institution": institution,
        "expert": expert,
        "consults": list.iter().map(show).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// Turnaround per requesting institution (aggregates only), and per consultation of the
/// caller's institution.
pub async fn turnaround(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    if subject.role == Role::Patient {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "a patient reads no consultation statistics",
        ));
    }
    let all = consults(&state)?.all();
    let own: Vec<Value> = all
        .iter()
        .filter(|c| c.requesting_institution == subject.institution)
        .map(|c| {
            json!({
                "consult_id": c.consult_id,
                "state": c.state,
                "requested_at": c.requested_at,
                "report_signed_at": c.report_signed_at,
                "turnaround_seconds": c.turnaround_seconds(),
            })
        })
        .collect();
    Ok(Json(json!({
        "by_institution": turnaround_by_institution(&all),
        "consults": own,
    }))
    .into_response())
}

pub async fn register_expert(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ExpertRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let expert = req.expert.clone();
    consults(&state)?.register_expert(&subject, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "institution": subject.institution, "expert": expert })),
    )
        .into_response())
}

/// The study's reports and, beside them, its AI findings; read under the study read policy
/// and audited like any read.
pub async fn list_reports(
    State(state): State<GatewayState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let opened = crate::access::open(
        &state,
        &subject,
        Act::ReadMetadata,
        AccessAction::Findings,
        &study,
        Below::default(),
    )
    .await?;
    // Free text names people: no profile can de-identify it, so no report is served in a
    // de-identified view (the caller knows the study only by its mapped UID).
    if opened.view() != hub_policies::View::Full {
        return Err(Problem::new(
            axum::http::StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "study {study} is shared with you de-identified, and its reports are not part of that view: their text may identify the patient"
            ),
        ));
    }
    let report = Reports(consults(&state)?)
        .of(&opened.study.study_uid)
        .await?;
    Ok(Json(report).into_response())
}

/// The study as the caller may write reports on it (they must read its images), or 404.
async fn writable(
    state: &GatewayState,
    subject: &Subject,
    study: &str,
) -> Result<StudyRef, Problem> {
    readable(state, subject, study, Act::ReadImages)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no study {study}")))
}

pub async fn draft_report(
    State(state): State<GatewayState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DraftRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let study = writable(&state, &subject, &study).await?;
    let id = Reports(consults(&state)?)
        .draft(&subject, &study, req)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "report_id": id }))).into_response())
}

pub async fn sign_report(
    State(state): State<GatewayState>,
    Path((study, report)): Path<(String, Uuid)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let study = writable(&state, &subject, &study).await?;
    Reports(consults(&state)?)
        .sign(&subject, &study, report)
        .await?;
    Ok(Json(json!({ "report_id": report, "signed_by": subject.id })).into_response())
}

pub async fn amend_report(
    State(state): State<GatewayState>,
    Path((study, report)): Path<(String, Uuid)>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AmendRequest>,
) -> Result<Response, Problem> {
    let subject = state.auth.identify(&headers)?;
    let study = writable(&state, &subject, &study).await?;
    let id = Reports(consults(&state)?)
        .amend(&subject, &study, report, req)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "report_id": id, "amends": report })),
    )
        .into_response())
}
