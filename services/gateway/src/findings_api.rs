//! `GET /studies/{study}/findings`: the AI findings recorded on a study, from the findings read
//! model (never a scan of the log). Opened through the same access point as the images
//! (`Act::ReadImages`, audited as `findings`): a caller who may not see the images gets the same
//! 404 as for a study that does not exist. In a de-identified view the UIDs are the share's
//! mapped UIDs and failure reasons (which name instances) are withheld; a grant limited to some
//! series shows only their findings.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hub_events::catalog::AccessAction;
use hub_policies::{Act, View};
use hub_projections::Findings;
use serde_json::{Value, json};

use crate::GatewayState;
use crate::access::{Below, open};
use crate::deid::{map_uid, resolve};
use crate::extract::Path;
use crate::problem::Problem;

/// Said with every answer: the models' output is not a diagnosis.
const NOTICE: &str = "Model output for review by a qualified reader; not a diagnosis. The \
                      reference CT model is a pipeline reference, not a clinical model.";

pub async fn study_findings(
    State(state): State<GatewayState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let (study, _) = resolve(&state, &identity, &study, Below::default()).await?;
    let opened = open(
        &state,
        &identity,
        Act::ReadImages,
        AccessAction::Findings,
        &study,
        Below::default(),
    )
    .await?;
    let view = opened.view();
    let only = opened.decision.only_series.clone();
    let rows = Findings::for_study(
        state.read_models.pool(),
        &opened.study.institution,
        &opened.study.study_uid,
    )
    .await
    .map_err(|e| Problem::unavailable(format!("findings read model: {e}")))?;
    let limited = view != View::Full || only.is_some();
    let models: Vec<Value> = rows
        .iter()
        .map(|row| {
            let findings: Vec<Value> = row
                .findings()
                .into_iter()
                .filter(|f| only.as_ref().is_none_or(|s| s.contains(&f.series_uid)))
                .map(|f| {
                    json!({
                        "series_uid": map_uid(&state, view, &f.series_uid),
                        "sop_instance_uid": map_uid(&state, view, &f.sop_instance_uid),
                        "frame": f.frame,
                        "label": f.label,
                        "score": f.score,
                        "bbox": f.bbox,
                    })
                })
                .collect();
            json!({
                "model_id": row.model_id,
                "model_version": row.model_version,
                "model_sha256": row.model_sha256,
                "outcome": row.outcome,
                "reason": if limited {
                    row.reason.as_ref().map(|_| "withheld in this view".to_owned())
                } else {
                    row.reason.clone()
                },
                "inference_ms": row.inference_ms,
                "slices": row.slices,
                "recorded_at": row.recorded_at,
                "findings": findings,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "study_uid": map_uid(&state, view, &opened.study.study_uid),
        "models": models,
        "notice": NOTICE,
    }))
    .into_response())
}
