//! WADO-URI (PS3.18 §9), for viewers older than DICOMweb:
//! `GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…[&contentType=…]`.
//!
//! One instance, either as the stored Part 10 file (`contentType=application/dicom`) or rendered
//! (`image/jpeg`, the default, or `image/png`) with `windowCenter` and `windowWidth`, `rows` and
//! `columns` (the image fits within them), `frameNumber` and `imageQuality`. It goes through the
//! same authorization point, de-identification and audit as WADO-RS: it is another spelling of
//! `/dicom-web/studies/{study}/series/{series}/instances/{instance}[/rendered]`.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hub_events::catalog::AccessAction;
use hub_policies::Act;

use crate::GatewayState;
use crate::dicomweb::{blob_store, first_original, open_target, percent_decode, rendered};
use crate::problem::Problem;

/// The parameters this implementation reads; any other is refused by name.
const KNOWN: [&str; 11] = [
    "requestType",
    "studyUID",
    "seriesUID",
    "objectUID",
    "contentType",
    "windowCenter",
    "windowWidth",
    "rows",
    "columns",
    "frameNumber",
    "imageQuality",
];

const DICOM: &str = "application/dicom";

fn parse(raw: Option<&str>) -> Result<HashMap<&'static str, String>, Problem> {
    let mut out = HashMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(known) = KNOWN.iter().find(|k| **k == key) else {
            return Err(Problem::bad_request(format!(
                "unsupported WADO-URI parameter {key:?} (supported: {})",
                KNOWN.join(", ")
            )));
        };
        let value = percent_decode(value).ok_or_else(|| {
            Problem::bad_request(format!("parameter {key} is not valid percent-encoding"))
        })?;
        if out.insert(*known, value).is_some() {
            return Err(Problem::bad_request(format!(
                "parameter {key} is given twice"
            )));
        }
    }
    Ok(out)
}

/// `GET /wado`.
pub async fn wado(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let params = parse(raw.as_deref())?;
    match params.get("requestType").map(String::as_str) {
        Some("WADO") => {}
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "requestType must be WADO, got {other:?}"
            )));
        }
        None => return Err(Problem::bad_request("requestType=WADO is required")),
    }
    let uid = |name: &str| {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| Problem::bad_request(format!("{name} is required")))
            .and_then(|v| match crate::extract::uid_error(&v) {
                None => Ok(v),
                Some(why) => Err(Problem::bad_request(format!(
                    "{name} is not a DICOM UID: {why}"
                ))),
            })
    };
    let (study, series, object) = (uid("studyUID")?, uid("seriesUID")?, uid("objectUID")?);
    // The first media type of the list this hub serves (PS3.18 §9.1.2.1.5).
    let wanted = params
        .get("contentType")
        .map_or("image/jpeg", String::as_str);
    let media = wanted
        .split(',')
        .map(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .find(|m| matches!(m.as_str(), DICOM | "image/jpeg" | "image/png" | "*/*"))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!(
                    "WADO-URI objects are served as application/dicom, image/jpeg or image/png; \
                     contentType was {wanted:?}"
                ),
            )
        })?;
    if media == DICOM {
        if let Some(p) = [
            "windowCenter",
            "windowWidth",
            "rows",
            "columns",
            "frameNumber",
        ]
        .iter()
        .find(|p| params.contains_key(**p))
        {
            return Err(Problem::bad_request(format!(
                "{p} applies to rendered images, not to contentType=application/dicom"
            )));
        }
        return original(state, headers, (&study, &series, &object)).await;
    }
    let mut query = Vec::new();
    match (params.get("windowCenter"), params.get("windowWidth")) {
        (Some(c), Some(w)) => query.push(format!("window={c},{w}")),
        (None, None) => {}
        _ => {
            return Err(Problem::bad_request(
                "windowCenter and windowWidth go together",
            ));
        }
    }
    let size = |name: &str| -> Result<Option<u32>, Problem> {
        params
            .get(name)
            .map(|v| {
                v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Problem::bad_request(format!("{name} must be a whole number from 1, got {v:?}"))
                })
            })
            .transpose()
    };
    match (size("columns")?, size("rows")?) {
        (Some(w), Some(h)) => query.push(format!("viewport={w},{h}")),
        (Some(n), None) | (None, Some(n)) => query.push(format!("viewport={n},{n}")),
        (None, None) => {}
    }
    if let Some(q) = params.get("imageQuality") {
        query.push(format!("quality={q}"));
    }
    let frame = match params.get("frameNumber") {
        Some(f) => f.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Problem::bad_request(format!(
                "frameNumber must be a whole number from 1, got {f:?}"
            ))
        })?,
        None => 1,
    };
    let mut headers = headers;
    let accept = if media == "image/png" {
        "image/png"
    } else {
        "image/jpeg"
    };
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    rendered(
        state,
        headers,
        Some(query.join("&")),
        (study, Some(series), Some(object)),
        frame,
        false,
    )
    .await
}

/// The instance as stored (de-identified for a de-identified share), one Part 10 body.
async fn original(
    state: GatewayState,
    headers: HeaderMap,
    (study, series, object): (&str, &str, &str),
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let ingest = blob_store(&state)?;
    let opened = open_target(
        &state,
        &identity,
        Act::ReadImages,
        AccessAction::RetrieveInstance,
        (study, Some(series), Some(object)),
    )
    .await?;
    let bytes = first_original(ingest, &opened, study).await?;
    let bytes = crate::deid::part10(&state.deid, opened.view(), bytes)
        .await
        .map_err(|e| Problem::internal(format!("de-identification: {e}")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, DICOM)],
        axum::body::Body::from(bytes),
    )
        .into_response())
}
