//! DICOMweb (PS3.18) under `/dicom-web`: STOW-RS, QIDO-RS (studies, series, instances of a
//! study) and WADO-RS retrieval of studies, series and instances (byte-identical originals).
//! Queries are answered from the study catalog read model, never by opening files.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use hub_ingest::{StowError, StowRequest};
use hub_projections::study_catalog::{CatalogInstance, CatalogSeries, CatalogStudy};
use hub_projections::{SeriesQuery, StudyCatalog, StudyQuery};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::GatewayState;
use crate::access::{Below, open, record_query, searcher};
use crate::extract::Path;
use crate::problem::Problem;
use hub_events::catalog::{AccessAction, AccessedStudy};
use hub_policies::{Act, Subject, View};

pub const DICOM_JSON: &str = "application/dicom+json";
const MAX_QIDO_LIMIT: u32 = 1000;
/// The most distinct UIDs a QIDO-RS `StudyInstanceUID` list may name.
pub const MAX_QIDO_UIDS: usize = 1000;
/// The most distinct frames a WADO-RS frame list may name. Repeats are answered once: the
/// answer has one part per distinct frame, in the order each first appears.
pub const MAX_FRAME_LIST: usize = 1000;

/// The DICOMweb root as clients reach it: the configured public URL (behind a proxy, which
/// may terminate TLS and add a path), else `http://` and the Host header of the request.
fn base_url(state: &GatewayState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.public_url {
        return format!("{public}/dicom-web");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/dicom-web")
}

fn dicom_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        body.to_string(),
    )
        .into_response()
}

// ---- STOW-RS -------------------------------------------------------------------------------

pub async fn stow_studies(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    stow(state, headers, None, body).await
}

pub async fn stow_study(
    State(state): State<GatewayState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    stow(state, headers, Some(study), body).await
}

async fn stow(
    state: GatewayState,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    state.auth.require_own(&identity, Act::Store)?;
    let ingest = state
        .ingest
        .as_ref()
        .ok_or_else(|| Problem::unavailable("this process does not run ingest"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let base = base_url(&state, &headers);
    let request = StowRequest {
        institution: identity.institution.clone(),
        actor: format!("user:{}", identity.id),
        study_in_url: study.clone(),
        content_type,
        base_url: base.clone(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let result = ingest
        .stow(&request, body.into_data_stream())
        .await
        .map_err(|e| match e {
            StowError::UnsupportedMediaType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                e.to_string(),
            ),
            StowError::TooLarge(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                e.to_string(),
            ),
            StowError::Store(_) | StowError::Blob(_) => Problem::unavailable(e.to_string()),
        })?;
    for f in &result.failed {
        tracing::warn!(reason = format!("{:#06X}", f.reason), detail = %f.detail, "STOW-RS instance failed");
    }
    let status = StatusCode::from_u16(result.http_status()).unwrap_or(StatusCode::OK);
    Ok(dicom_json(
        status,
        result.to_dicom_json(&base, study.as_deref()),
    ))
}

// ---- QIDO-RS -------------------------------------------------------------------------------

fn attr(vr: &str, value: Option<Value>) -> Value {
    match value {
        Some(v) => json!({"vr": vr, "Value": [v]}),
        None => json!({"vr": vr}),
    }
}

fn text(vr: &str, value: &Option<String>) -> Value {
    attr(vr, value.as_ref().map(|v| json!(v)))
}

/// A study's QIDO-RS attributes, serialized straight into an answer: a page of 100 studies
/// built as `Value` trees first spent a tenth of a search-heavy profile allocating maps.
/// [`study_json`] makes the tree where a de-identified view has to rewrite it.
struct StudyAttributes<'a> {
    study: &'a CatalogStudy,
    base: &'a str,
}

/// One attribute: its VR and, when present, its one value.
struct Attribute<'a, T> {
    vr: &'a str,
    value: Option<T>,
}

impl<T: Serialize> Serialize for Attribute<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("vr", self.vr)?;
        if let Some(v) = &self.value {
            map.serialize_entry("Value", std::slice::from_ref(v))?;
        }
        map.end()
    }
}

/// An attribute with its one value.
fn one<T>(vr: &str, value: T) -> Attribute<'_, T> {
    Attribute {
        vr,
        value: Some(value),
    }
}

fn text_attribute<'a>(vr: &'a str, value: &'a Option<String>) -> Attribute<'a, &'a str> {
    Attribute {
        vr,
        value: value.as_deref(),
    }
}

/// A person name's alphabetic group.
#[derive(serde::Serialize)]
struct Alphabetic<'a> {
    #[serde(rename = "Alphabetic")]
    alphabetic: &'a str,
}

fn person_attribute(value: &Option<String>) -> Attribute<'_, Alphabetic<'_>> {
    Attribute {
        vr: "PN",
        value: value.as_deref().map(|alphabetic| Alphabetic { alphabetic }),
    }
}

/// ModalitiesInStudy: every value, the attribute present (empty) when there is none.
struct Modalities<'a>(&'a str);

impl Serialize for Modalities<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("vr", "CS")?;
        let values: Vec<&str> = self.0.split('\\').filter(|m| !m.is_empty()).collect();
        map.serialize_entry("Value", &values)?;
        map.end()
    }
}

impl Serialize for StudyAttributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.study;
        let retrieve = format!("{}/studies/{}", self.base, s.study_uid);
        let mut m = serializer.serialize_map(Some(14))?;
        m.serialize_entry("00080020", &text_attribute("DA", &s.study_date))?;
        m.serialize_entry("00080030", &text_attribute("TM", &s.study_time))?;
        m.serialize_entry("00080050", &text_attribute("SH", &s.accession_number))?;
        m.serialize_entry("00080061", &Modalities(&s.modalities))?;
        m.serialize_entry("00080090", &person_attribute(&s.referring_physician))?;
        m.serialize_entry("00081030", &text_attribute("LO", &s.study_description))?;
        m.serialize_entry("00081190", &one("UR", retrieve))?;
        m.serialize_entry("00100010", &person_attribute(&s.patient_name))?;
        m.serialize_entry("00100020", &text_attribute("LO", &s.patient_id))?;
        m.serialize_entry("00100030", &text_attribute("DA", &s.patient_birth_date))?;
        m.serialize_entry("00100040", &text_attribute("CS", &s.patient_sex))?;
        m.serialize_entry("0020000D", &one("UI", &s.study_uid))?;
        m.serialize_entry("00201206", &one("IS", s.series_count))?;
        m.serialize_entry("00201208", &one("IS", s.instance_count))?;
        m.end()
    }
}

/// A study's QIDO-RS attributes as a JSON tree.
fn study_json(study: &CatalogStudy, base: &str) -> Value {
    // Cannot fail: every key is a string.
    serde_json::to_value(StudyAttributes { study, base }).unwrap_or(Value::Null)
}

fn series_json(s: &CatalogSeries, base: &str) -> Value {
    json!({
        "00080060": text("CS", &s.modality),
        "0008103E": text("LO", &s.series_description),
        "00081190": attr("UR", Some(json!(format!("{base}/studies/{}/series/{}", s.study_uid, s.series_uid)))),
        "0020000D": attr("UI", Some(json!(s.study_uid))),
        "0020000E": attr("UI", Some(json!(s.series_uid))),
        "00200011": attr("IS", s.series_number.map(|n| json!(n))),
        "00201209": attr("IS", Some(json!(s.instance_count))),
    })
}

fn instance_json(i: &CatalogInstance, base: &str) -> Value {
    json!({
        "00020010": attr("UI", Some(json!(i.transfer_syntax_uid))),
        "00080016": attr("UI", Some(json!(i.sop_class_uid))),
        "00080018": attr("UI", Some(json!(i.sop_instance_uid))),
        "00081190": attr("UR", Some(json!(format!(
            "{base}/studies/{}/series/{}/instances/{}", i.study_uid, i.series_uid, i.sop_instance_uid
        )))),
        "0020000D": attr("UI", Some(json!(i.study_uid))),
        "0020000E": attr("UI", Some(json!(i.series_uid))),
        "00200013": attr("IS", i.instance_number.map(|n| json!(n))),
    })
}

/// Parses QIDO-RS study query parameters (keywords or tags), refusing what it cannot answer.
pub fn parse_study_query(raw: Option<&str>) -> Result<StudyQuery, Problem> {
    let mut q = StudyQuery {
        limit: 100,
        ..StudyQuery::default()
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| {
            Problem::bad_request(format!(
                "query parameter {key:?} is not valid percent-encoding"
            ))
        })?;
        let some = || (!value.is_empty()).then(|| value.clone());
        match key {
            "StudyInstanceUID" | "0020000D" => q.study_uids = parse_uid_list(&value)?,
            "PatientID" | "00100020" => q.patient_id = some(),
            "PatientName" | "00100010" => q.patient_name = some(),
            "AccessionNumber" | "00080050" => q.accession_number = some(),
            "ModalitiesInStudy" | "00080061" => q.modality = some(),
            "StudyDate" | "00080020" => {
                (q.study_date_from, q.study_date_to) =
                    parse_date_range(&value).map_err(Problem::bad_request)?;
            }
            "limit" => q.limit = parse_limit(&value)?,
            "offset" => q.offset = parse_offset(&value)?,
            // Every study attribute the catalog holds is always returned.
            "includefield" | "fuzzymatching" => {}
            other => {
                return Err(Problem::bad_request(format!(
                    "unsupported QIDO-RS study query parameter {other:?}"
                )));
            }
        }
    }
    Ok(q)
}

/// A QIDO-RS UID list (`a,b,c`): each a UID, repeats dropped, at most [`MAX_QIDO_UIDS`].
fn parse_uid_list(value: &str) -> Result<Vec<String>, Problem> {
    let mut uids: Vec<String> = Vec::new();
    for uid in value.split(',').filter(|v| !v.is_empty()) {
        if let Some(why) = crate::extract::uid_error(uid) {
            return Err(Problem::bad_request(format!(
                "StudyInstanceUID lists UIDs: {why}"
            )));
        }
        if !uids.iter().any(|u| u == uid) {
            if uids.len() == MAX_QIDO_UIDS {
                return Err(Problem::bad_request(format!(
                    "StudyInstanceUID lists at most {MAX_QIDO_UIDS} distinct UIDs"
                )));
            }
            uids.push(uid.to_owned());
        }
    }
    Ok(uids)
}

/// A DICOM date match, `YYYYMMDD` or a range `YYYYMMDD-YYYYMMDD` with either end open, as
/// inclusive bounds.
pub fn parse_date_range(value: &str) -> Result<(Option<String>, Option<String>), String> {
    let (from, to) = value.split_once('-').unwrap_or((value, value));
    for d in [from, to] {
        let is_date = d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit());
        if !(d.is_empty() || is_date) {
            return Err(format!(
                "StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, got {value:?}"
            ));
        }
    }
    let bound = |d: &str| (!d.is_empty()).then(|| d.to_owned());
    Ok((bound(from), bound(to)))
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub async fn search_studies(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let query = parse_study_query(raw.as_deref())?;
    let base = base_url(&state, &headers);
    // The answer is serialized while the audit event is appended, not after: a study shown in
    // full straight from its row, a de-identified one through the tree the de-identifier
    // rewrites.
    let (body, more) = find_studies_as(&state, &identity, &query, |studies, views| {
        let mut out = Vec::with_capacity(studies.len() * 1024);
        out.push(b'[');
        for (n, (study, view)) in studies.iter().zip(views).enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let written = match view {
                View::Full => {
                    serde_json::to_writer(&mut out, &StudyAttributes { study, base: &base })
                }
                View::Deidentified(_) => {
                    let mut json = study_json(study, &base);
                    crate::deid::apply(&state, view, &mut json);
                    serde_json::to_writer(&mut out, &json)
                }
            };
            written?;
        }
        out.push(b']');
        Ok::<_, serde_json::Error>(out)
    })
    .await?;
    let body = body.map_err(|e| Problem::internal(format!("DICOM JSON: {e}")))?;
    Ok(with_more(
        (StatusCode::OK, [(header::CONTENT_TYPE, DICOM_JSON)], body).into_response(),
        more,
    ))
}

/// The studies `identity` may see that match `query`, as DICOM JSON (de-identified where the
/// grant says so), the query audited; and whether more follow. QIDO-RS and DIMSE C-FIND both
/// answer through it. `base` prefixes the RetrieveURLs.
pub async fn find_studies(
    state: &GatewayState,
    identity: &Subject,
    query: &StudyQuery,
    base: &str,
) -> Result<(Vec<Value>, bool), Problem> {
    find_studies_as(state, identity, query, |studies, views| {
        studies
            .iter()
            .zip(views)
            .map(|(s, view)| {
                let mut json = study_json(s, base);
                crate::deid::apply(state, view, &mut json);
                json
            })
            .collect()
    })
    .await
}

/// The studies `identity` may see that match `query` and how it may see each, turned into the
/// answer by `finish` while the audit event is appended; and whether more follow.
async fn find_studies_as<T>(
    state: &GatewayState,
    identity: &Subject,
    query: &StudyQuery,
    finish: impl FnOnce(&[CatalogStudy], Vec<View>) -> T,
) -> Result<(T, bool), Problem> {
    let (shown, more) = searcher(state).studies(identity, query).await?;
    let (studies, views): (Vec<CatalogStudy>, Vec<View>) =
        shown.into_iter().map(|s| (s.row, s.view)).unzip();
    // The audit event is appended (and fsynced) while the answer is built, and awaited before
    // it is returned: nothing is served unrecorded.
    let audit = {
        let (state, identity) = (state.clone(), identity.clone());
        let shown = accessed(studies.iter().map(|s| (&s.institution, &s.study_uid)));
        tokio::spawn(async move { record_query(&state, &identity, shown).await })
    };
    let body = finish(&studies, views);
    audit
        .await
        .map_err(|e| Problem::unavailable(format!("the audit trail append stopped: {e}")))??;
    Ok((body, more))
}

/// The (owner, study) rows a query showed, as its audit event lists them.
fn accessed<'a>(shown: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<AccessedStudy> {
    let mut studies: Vec<AccessedStudy> = shown
        .map(|(owner, study_uid)| AccessedStudy {
            owner: owner.clone(),
            study_uid: study_uid.clone(),
        })
        .collect();
    studies.dedup();
    studies
}

/// Records that a query showed these (owner, study) rows.
async fn record_shown<'a>(
    state: &GatewayState,
    identity: &Subject,
    shown: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), Problem> {
    record_query(state, identity, accessed(shown)).await
}

pub async fn search_series(
    State(state): State<GatewayState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let opened = open(
        &state,
        &identity,
        Act::ReadMetadata,
        AccessAction::Query,
        &study,
        Below::default(),
    )
    .await?;
    let mut series = StudyCatalog::series(
        state.read_models.pool(),
        &opened.study.institution,
        &opened.study.study_uid,
    )
    .await
    .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?;
    if let Some(only) = &opened.decision.only_series {
        series.retain(|s| only.contains(&s.series_uid));
    }
    let base = base_url(&state, &headers);
    let mut body = Vec::with_capacity(series.len());
    for s in &series {
        let mut json = series_json(s, &base);
        crate::deid::apply(&state, opened.view(), &mut json);
        body.push(json);
    }
    Ok(dicom_json(StatusCode::OK, Value::Array(body)))
}

pub async fn search_instances(
    State(state): State<GatewayState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let below = Below {
        series: Some(&series),
        instance: None,
    };
    let opened = open(
        &state,
        &identity,
        Act::ReadMetadata,
        AccessAction::Query,
        &study,
        below,
    )
    .await?;
    let base = base_url(&state, &headers);
    let mut body = Vec::with_capacity(opened.instances.len());
    for i in &opened.instances {
        let mut json = instance_json(i, &base);
        crate::deid::apply(&state, opened.view(), &mut json);
        body.push(json);
    }
    Ok(dicom_json(StatusCode::OK, Value::Array(body)))
}

// ---- WADO-RS -------------------------------------------------------------------------------

/// What a WADO-RS path names: a study, optionally a series, optionally an instance.
type Target = (String, Option<String>, Option<String>);
type PathParams = Path<std::collections::HashMap<String, String>>;

fn target(params: &std::collections::HashMap<String, String>) -> Result<Target, Problem> {
    let study = params
        .get("study")
        .cloned()
        .ok_or_else(|| Problem::bad_request("no study in the path"))?;
    Ok((
        study,
        params.get("series").cloned(),
        params.get("instance").cloned(),
    ))
}

/// `/metadata` of a study, a series or an instance.
pub async fn metadata_resource(
    State(state): State<GatewayState>,
    Path(params): PathParams,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    metadata(state, headers, target(&params)?).await
}

/// WADO-RS retrieval of a study, a series or an instance.
pub async fn retrieve_resource(
    State(state): State<GatewayState>,
    Path(params): PathParams,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    retrieve(state, headers, target(&params)?).await
}

/// Opens a WADO-RS target, whose UIDs may be a de-identified share's mapped UIDs.
pub(crate) async fn open_target(
    state: &GatewayState,
    identity: &Subject,
    act: Act,
    action: AccessAction,
    (study, series, instance): (&str, Option<&str>, Option<&str>),
) -> Result<crate::access::Opened, Problem> {
    open(
        state,
        identity,
        act,
        action,
        study,
        Below { series, instance },
    )
    .await
}

/// The ingest service and its blob store, which retrievals read from.
pub(crate) fn blob_store(state: &GatewayState) -> Result<&hub_ingest::Ingest, Problem> {
    state
        .ingest
        .as_ref()
        .ok_or_else(|| Problem::unavailable("this process has no blob store"))
}

/// The first instance an opened study, series or instance has (a study may have none yet).
pub(crate) fn first<'a>(
    opened: &'a crate::access::Opened,
    study: &str,
) -> Result<&'a CatalogInstance, Problem> {
    opened
        .instances
        .first()
        .ok_or_else(|| Problem::not_found(format!("no instances in study {study}")))
}

/// The stored original of the first instance `opened` names (the one a single-instance
/// request names; a study or series thumbnail shows it).
pub(crate) async fn first_original(
    ingest: &hub_ingest::Ingest,
    opened: &crate::access::Opened,
    study: &str,
) -> Result<bytes::Bytes, Problem> {
    let instance = first(opened, study)?;
    ingest
        .blobs()
        .get(&instance.blob_key)
        .await
        .map_err(|e| blob_problem(instance, &e))
}

/// A stored original that cannot be read. Missing (the catalog names a blob the store does not
/// have: lost or removed behind the hub's back) is a 500 naming the instance and the blob key,
/// as retrying will not help; any other failure of the blob store is a 503.
pub(crate) fn blob_problem(instance: &CatalogInstance, e: &hub_ingest::BlobError) -> Problem {
    if e.is_not_found() {
        missing_original(instance)
    } else {
        Problem::unavailable(format!(
            "blob store, SOP Instance {} (blob {}): {e}",
            instance.sop_instance_uid, instance.blob_key
        ))
    }
}

/// The 500 of an original the blob store does not have.
fn missing_original(instance: &CatalogInstance) -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Stored original missing",
        format!(
            "the stored original of SOP Instance {} (blob {}) is missing from the blob store",
            instance.sop_instance_uid, instance.blob_key
        ),
    )
}

/// DICOM JSON metadata of the instances, prepared at ingest (derived from the original when the
/// prepared copy is missing); never the pixel data.
async fn metadata(
    state: GatewayState,
    headers: HeaderMap,
    (study, series, instance): Target,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let base = base_url(&state, &headers);
    let ingest = blob_store(&state)?;
    let opened = open_target(
        &state,
        &identity,
        Act::ReadMetadata,
        AccessAction::Metadata,
        (&study, series.as_deref(), instance.as_deref()),
    )
    .await?;
    let instances = &opened.instances;
    let blobs = ingest.blobs();
    let mut out = Vec::with_capacity(instances.len());
    for i in instances {
        let prepared = blobs
            .get(&hub_ingest::stow::metadata_key(&i.blob_key))
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let value = match prepared {
            Some(v) => v,
            None => {
                let original = blobs
                    .get(&i.blob_key)
                    .await
                    .map_err(|e| blob_problem(i, &e))?;
                hub_ingest::dicom::read_header_and_metadata(std::io::Cursor::new(&original))
                    .map(|(_, m)| m)
                    .map_err(|e| {
                        Problem::internal(format!("stored instance {}: {e}", i.sop_instance_uid))
                    })?
            }
        };
        let mut value = value;
        crate::deid::apply(&state, opened.view(), &mut value);
        with_bulk_data_uris(&mut value, &base, &i.transfer_syntax_uid, opened.view());
        out.push(value);
    }
    Ok(dicom_json(StatusCode::OK, Value::Array(out)))
}

/// Inline binary values at least this long (base64 characters) are replaced by a BulkDataURI.
const BULK_INLINE_MAX: usize = 1024;

/// Points `/metadata` at the bulk data (PS3.18 §8.3.5.1.1 / F.2.2): Pixel Data, which the
/// metadata never carries, and top-level binary values too long to inline. The URIs use the UIDs
/// as the view shows them. A de-identified view keeps only the Pixel Data URI: other binary
/// values are not served there.
fn with_bulk_data_uris(value: &mut Value, base: &str, transfer_syntax: &str, view: View) {
    let uid = |tag: &str| {
        value
            .get(tag)
            .and_then(|e| e["Value"][0].as_str())
            .map(str::to_owned)
    };
    let (Some(study), Some(series), Some(sop)) =
        (uid("0020000D"), uid("0020000E"), uid("00080018"))
    else {
        return;
    };
    let Some(map) = value.as_object_mut() else {
        return;
    };
    let prefix = format!("{base}/studies/{study}/series/{series}/instances/{sop}/bulkdata");
    let long: Vec<String> = map
        .iter()
        .filter(|(_, e)| {
            e.get("InlineBinary")
                .and_then(Value::as_str)
                .is_some_and(|b| b.len() >= BULK_INLINE_MAX)
        })
        .map(|(tag, _)| tag.clone())
        .collect();
    for tag in long {
        if let Some(e) = map.get_mut(&tag).and_then(Value::as_object_mut) {
            e.remove("InlineBinary");
            if view == View::Full {
                e.insert("BulkDataURI".into(), json!(format!("{prefix}/{tag}")));
            }
        }
    }
    if map.contains_key("00280010") {
        let vr = if frame_media_type(transfer_syntax) == "application/octet-stream" {
            "OW"
        } else {
            "OB"
        };
        map.insert(
            "7FE00010".into(),
            json!({"vr": vr, "BulkDataURI": format!("{prefix}/7FE00010")}),
        );
    }
}

/// Streams the stored originals as multipart/related; type="application/dicom", one instance in
/// memory at a time.
async fn retrieve(
    state: GatewayState,
    headers: HeaderMap,
    (study, series, instance): Target,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let ingest = blob_store(&state)?;
    let action = match (&series, &instance) {
        (_, Some(_)) => AccessAction::RetrieveInstance,
        (Some(_), None) => AccessAction::RetrieveSeries,
        _ => AccessAction::RetrieveStudy,
    };
    let opened = open_target(
        &state,
        &identity,
        Act::ReadImages,
        action,
        (&study, series.as_deref(), instance.as_deref()),
    )
    .await?;
    let view = opened.view();
    let deid = state.deid.clone();
    let instances = opened.instances;
    let blobs = ingest.blobs().clone();
    // Every original is there before the first byte leaves: a 200 is never cut short by a
    // missing one (a metadata request per instance, no byte read).
    for i in &instances {
        match blobs.exists(&i.blob_key).await {
            Ok(true) => {}
            Ok(false) => return Err(missing_original(i)),
            Err(e) => return Err(blob_problem(i, &e)),
        }
    }
    let boundary = boundary();
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let parts = futures::stream::iter(instances).then(move |i| {
        let blobs = blobs.clone();
        let boundary = boundary.clone();
        let deid = deid.clone();
        async move {
            let bytes = blobs.get(&i.blob_key).await.map_err(|e| {
                tracing::error!(blob = %i.blob_key, error = %e, "stored blob unreadable");
                std::io::Error::other(e.to_string())
            })?;
            let bytes = crate::deid::part10(&deid, view, bytes).await?;
            let head = format!(
                "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\n\r\n",
                i.transfer_syntax_uid
            );
            Ok::<_, std::io::Error>(futures::stream::iter(vec![
                Ok::<Bytes, std::io::Error>(Bytes::from(head)),
                Ok(bytes),
                Ok(Bytes::from_static(b"\r\n")),
            ]))
        }
    });
    let body = parts
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten()
        .chain(futures::stream::once(async move { Ok(closing) }));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .map_err(|e| Problem::internal(e.to_string()))?
        .into_response())
}

// ---- WADO-RS frames ------------------------------------------------------------------------

/// The media type of an encapsulated transfer syntax's frames (PS3.18 table 8.7.3-2).
fn frame_media_type(transfer_syntax: &str) -> &'static str {
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => "application/octet-stream",
    }
}

/// How frames are answered: the part media type, and whether compressed frames are decoded to
/// native (Explicit VR Little Endian) pixel data first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAnswer {
    pub media: &'static str,
    pub decode: bool,
}

const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// What the Accept header admits for frames stored in `stored_ts`: the part media type to
/// answer with and whether to decode, or why nothing is acceptable.
pub fn negotiate_frames(
    accept: Option<&str>,
    stored_ts: &str,
    encapsulated: bool,
) -> Result<FrameAnswer, String> {
    let as_stored = |media| FrameAnswer {
        media,
        decode: false,
    };
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(as_stored(if encapsulated {
            frame_media_type(stored_ts)
        } else {
            "application/octet-stream"
        }));
    };
    let native_media = "application/octet-stream";
    for entry in accept.split(',') {
        let mut params = entry.split(';').map(str::trim);
        let essence = params.next().unwrap_or("").to_ascii_lowercase();
        let (mut kind, mut ts) = (None, None);
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                let v = v.trim().trim_matches('"').to_ascii_lowercase();
                match k.trim().to_ascii_lowercase().as_str() {
                    "type" => kind = Some(v),
                    "transfer-syntax" => ts = Some(v),
                    _ => {}
                }
            }
        }
        if essence == "*/*" || (essence == "multipart/related" && kind.is_none()) {
            return Ok(as_stored(if encapsulated {
                frame_media_type(stored_ts)
            } else {
                native_media
            }));
        }
        if essence != "multipart/related" {
            continue;
        }
        let kind = kind.unwrap_or_default();
        let any_ts = ts.as_deref() == Some("*");
        if !encapsulated {
            if kind == native_media || kind == "*/*" {
                return Ok(as_stored(native_media));
            }
            continue;
        }
        let stored_ok = any_ts || ts.as_deref() == Some(stored_ts);
        if kind == frame_media_type(stored_ts) && (ts.is_none() || stored_ok) {
            return Ok(as_stored(frame_media_type(stored_ts)));
        }
        if (kind == native_media || kind == "*/*") && stored_ok {
            return Ok(as_stored(native_media));
        }
        // application/octet-stream defaults to Explicit VR Little Endian (PS3.18 §8.7.3.5.2):
        // the compressed frames are decoded.
        if kind == native_media && ts.as_deref().is_none_or(|t| t == EXPLICIT_VR_LITTLE_ENDIAN) {
            return Ok(FrameAnswer {
                media: native_media,
                decode: true,
            });
        }
    }
    Err(if encapsulated {
        format!(
            "the frames are stored compressed ({stored_ts}); ask for multipart/related; \
             type=\"{}\", type=\"application/octet-stream\" (decoded) or \
             type=\"application/octet-stream\"; transfer-syntax=* (as stored)",
            frame_media_type(stored_ts)
        )
    } else {
        "the frames are uncompressed: ask for multipart/related; type=\"application/octet-stream\""
            .into()
    })
}

pub async fn retrieve_frames(
    State(state): State<GatewayState>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let wanted = parse_frame_list(&list)?;
    frames(&state, &headers, (&study, &series, &instance), wanted).await
}

/// A WADO-RS frame list (`1,3,5`): numbers from 1, repeats dropped (the first occurrence keeps
/// its place), at most [`MAX_FRAME_LIST`] distinct frames.
pub fn parse_frame_list(list: &str) -> Result<Vec<u32>, Problem> {
    let mut seen = std::collections::HashSet::new();
    let mut wanted = Vec::new();
    for n in list.split(',') {
        let n = n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "frame list must be numbers from 1, comma-separated; got {:?}",
                    truncated(list)
                ))
            })?;
        if seen.insert(n) {
            if wanted.len() == MAX_FRAME_LIST {
                return Err(Problem::bad_request(format!(
                    "a frame list names at most {MAX_FRAME_LIST} distinct frames"
                )));
            }
            wanted.push(n);
        }
    }
    Ok(wanted)
}

/// The start of a long value, for a problem's detail.
fn truncated(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

/// A multipart/related body streamed part by part (its head, its bytes, CRLF), then the closing
/// delimiter: the parts are never copied into one buffer.
fn multipart_body(boundary: &str, content_type: &str, parts: Vec<Bytes>) -> Body {
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
    ));
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let chunks = parts
        .into_iter()
        .flat_map(move |part| [head.clone(), part, Bytes::from_static(b"\r\n")])
        .chain(std::iter::once(closing))
        .map(Ok::<Bytes, std::io::Error>);
    Body::from_stream(futures::stream::iter(chunks))
}

/// A new multipart boundary.
fn boundary() -> String {
    format!("hub-{}", uuid::Uuid::now_v7().simple())
}

/// WADO-RS bulk data (the BulkDataURIs of `/metadata`): Pixel Data as its frames, negotiated
/// like `/frames` (one part per frame); any other top-level attribute as its value's bytes
/// (`application/octet-stream`, little endian).
pub async fn retrieve_bulkdata(
    State(state): State<GatewayState>,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let parsed = (tag.len() == 8)
        .then(|| u32::from_str_radix(&tag, 16).ok())
        .flatten()
        .map(|t| ((t >> 16) as u16, t as u16))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "a bulk data URI ends in an attribute tag of 8 hex digits, got {tag:?}"
            ))
        })?;
    if parsed == (0x7FE0, 0x0010) {
        return frames(&state, &headers, (&study, &series, &instance), Vec::new()).await;
    }
    let identity = state.auth.identify(&headers)?;
    let ingest = blob_store(&state)?;
    let opened = open_target(
        &state,
        &identity,
        Act::ReadMetadata,
        AccessAction::Metadata,
        (&study, Some(&series), Some(&instance)),
    )
    .await?;
    if opened.view() != View::Full {
        return Err(Problem::not_found(format!(
            "bulk data {tag} is not served in a de-identified view (only Pixel Data is)"
        )));
    }
    let original = first_original(ingest, &opened, &study).await?;
    let bytes =
        tokio::task::spawn_blocking(move || hub_ingest::dicom::attribute_bytes(&original, parsed))
            .await
            .map_err(|e| Problem::internal(e.to_string()))?
            .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Unreadable", e))?
            .ok_or_else(|| {
                Problem::not_found(format!("instance {instance} has no attribute {tag}"))
            })?;
    let boundary = boundary();
    let media = "application/octet-stream";
    let body = multipart_body(&boundary, media, vec![Bytes::from(bytes)]);
    Ok(multipart_response(media, &boundary, body))
}

/// Frames `wanted` (empty: all) of one instance, negotiated against the Accept header.
async fn frames(
    state: &GatewayState,
    headers: &HeaderMap,
    (study, series, instance): (&str, &str, &str),
    wanted: Vec<u32>,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(headers)?;
    let ingest = blob_store(state)?;
    let opened = open_target(
        state,
        &identity,
        Act::ReadImages,
        AccessAction::Frames,
        (study, Some(series), Some(instance)),
    )
    .await?;
    let original = first_original(ingest, &opened, study).await?;
    // Kept for decoding if the client asks for native frames of a compressed original.
    let (original_for_decoding, wanted_frames) = (original.clone(), wanted.clone());
    let frames =
        tokio::task::spawn_blocking(move || hub_ingest::dicom::extract_frames(&original, &wanted))
            .await
            .map_err(|e| Problem::internal(e.to_string()))?
            .map_err(|e| match e {
                hub_ingest::dicom::FrameError::NoSuchFrame { .. } => {
                    Problem::not_found(e.to_string())
                }
                hub_ingest::dicom::FrameError::NoPixelData => {
                    Problem::new(StatusCode::CONFLICT, "No pixel data", e.to_string())
                }
                hub_ingest::dicom::FrameError::Unreadable(_) => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Unreadable pixel data",
                    e.to_string(),
                ),
            })?;
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let answer = negotiate_frames(accept, &frames.transfer_syntax_uid, frames.encapsulated)
        .map_err(|reason| Problem::new(StatusCode::NOT_ACCEPTABLE, "Not acceptable", reason))?;
    let media = answer.media;
    let (part_ts, parts) = if answer.decode {
        let stored_ts = frames.transfer_syntax_uid.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            crate::rendered::decode_frames(&original_for_decoding, &wanted_frames)
        })
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| {
            Problem::new(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!(
                    "{e}; the frames are stored as {stored_ts}: ask for type=\"{}\" or \
                     type=\"application/octet-stream\"; transfer-syntax=* to get them as stored",
                    frame_media_type(&stored_ts)
                ),
            )
        })?;
        (EXPLICIT_VR_LITTLE_ENDIAN, decoded)
    } else if frames.encapsulated {
        (frames.transfer_syntax_uid.as_str(), frames.frames)
    } else {
        (EXPLICIT_VR_LITTLE_ENDIAN, frames.frames)
    };
    let boundary = boundary();
    let parts = parts.into_iter().map(Bytes::from).collect();
    let body = multipart_body(
        &boundary,
        &format!("{media}; transfer-syntax={part_ts}"),
        parts,
    );
    Ok(multipart_response(media, &boundary, body))
}

/// A 200 answer of multipart/related parts of type `media`.
fn multipart_response(media: &str, boundary: &str, body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"{media}\"; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}

// ---- QIDO-RS at series and instance level across studies -----------------------------------

/// Parses QIDO-RS series/instance query parameters (keywords or tags).
pub fn parse_series_query(raw: Option<&str>) -> Result<SeriesQuery, Problem> {
    let mut q = SeriesQuery {
        limit: 100,
        ..SeriesQuery::default()
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| {
            Problem::bad_request(format!(
                "query parameter {key:?} is not valid percent-encoding"
            ))
        })?;
        let some = || (!value.is_empty()).then(|| value.clone());
        match key {
            "StudyInstanceUID" | "0020000D" => q.study_uid = some(),
            "SeriesInstanceUID" | "0020000E" => q.series_uid = some(),
            "SOPInstanceUID" | "00080018" => q.sop_instance_uid = some(),
            "Modality" | "00080060" => q.modality = some(),
            "SOPClassUID" | "00080016" => q.sop_class_uid = some(),
            "limit" => q.limit = parse_limit(&value)?,
            "offset" => q.offset = parse_offset(&value)?,
            "includefield" | "fuzzymatching" => {}
            other => {
                return Err(Problem::bad_request(format!(
                    "unsupported QIDO-RS series/instance query parameter {other:?}"
                )));
            }
        }
    }
    Ok(q)
}

/// QIDO-RS `limit`: 1 to [`MAX_QIDO_LIMIT`].
fn parse_limit(value: &str) -> Result<u32, Problem> {
    value
        .parse()
        .ok()
        .filter(|l| (1..=MAX_QIDO_LIMIT).contains(l))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "limit must be 1 to {MAX_QIDO_LIMIT}, got {value:?}"
            ))
        })
}

/// QIDO-RS `offset`: a whole number.
fn parse_offset(value: &str) -> Result<u32, Problem> {
    value
        .parse()
        .map_err(|_| Problem::bad_request(format!("offset must be a whole number, got {value:?}")))
}

/// PS3.18 §8.3.4.1: when a search has more matches than its `limit` returned, the response
/// says so in a `Warning: 299` header. Matches are not counted (a count would visit every one).
fn with_more(mut response: Response, more: bool) -> Response {
    if more {
        response.headers_mut().insert(
            header::WARNING,
            HeaderValue::from_static(
                "299 hub \"There are additional results that can be requested\"",
            ),
        );
    }
    response
}

pub async fn search_all_series(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let query = parse_series_query(raw.as_deref())?;
    let (series, more) = searcher(&state).series(&identity, &query).await?;
    let base = base_url(&state, &headers);
    let mut body = Vec::with_capacity(series.len());
    for s in &series {
        let mut json = series_json(&s.row, &base);
        crate::deid::apply(&state, s.view, &mut json);
        body.push(json);
    }
    record_shown(
        &state,
        &identity,
        series
            .iter()
            .map(|s| (&s.row.institution, &s.row.study_uid)),
    )
    .await?;
    Ok(with_more(
        dicom_json(StatusCode::OK, Value::Array(body)),
        more,
    ))
}

pub async fn search_all_instances(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let identity = state.auth.identify(&headers)?;
    let query = parse_series_query(raw.as_deref())?;
    let (instances, more) = searcher(&state).instances(&identity, &query).await?;
    let base = base_url(&state, &headers);
    let mut body = Vec::with_capacity(instances.len());
    for i in &instances {
        let mut json = instance_json(&i.row, &base);
        crate::deid::apply(&state, i.view, &mut json);
        body.push(json);
    }
    record_shown(
        &state,
        &identity,
        instances
            .iter()
            .map(|i| (&i.row.institution, &i.row.study_uid)),
    )
    .await?;
    Ok(with_more(
        dicom_json(StatusCode::OK, Value::Array(body)),
        more,
    ))
}

// ---- WADO-RS rendered and thumbnail --------------------------------------------------------

/// Query parameters and Accept header of a rendered request.
fn render_options(
    headers: &HeaderMap,
    raw: Option<&str>,
    frame: u32,
    thumbnail: bool,
) -> Result<crate::rendered::RenderOptions, Problem> {
    use crate::rendered::{Format, RenderOptions, THUMBNAIL_SIZE, parse_window};
    let mut quality = 90u8;
    let mut window = None;
    let mut viewport = thumbnail.then_some((THUMBNAIL_SIZE, THUMBNAIL_SIZE));
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| {
            Problem::bad_request(format!(
                "query parameter {key:?} is not valid percent-encoding"
            ))
        })?;
        match key {
            "window" => window = Some(parse_window(&value).map_err(Problem::bad_request)?),
            "quality" => {
                quality = value
                    .parse()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| {
                        Problem::bad_request(format!("quality must be 1 to 100, got {value:?}"))
                    })?
            }
            "viewport" => {
                let mut it = value
                    .split(',')
                    .map(|v| v.trim().parse::<u32>().ok().filter(|n| *n > 0));
                match (it.next().flatten(), it.next().flatten()) {
                    (Some(w), Some(h)) => viewport = Some((w, h)),
                    _ => {
                        return Err(Problem::bad_request(format!(
                            "viewport must be width,height in pixels, got {value:?}"
                        )));
                    }
                }
            }
            "annotation" | "charset" => {}
            other => {
                return Err(Problem::bad_request(format!(
                    "unsupported rendered parameter {other:?}"
                )));
            }
        }
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("image/jpeg")
        .to_ascii_lowercase();
    let format = accept
        .split(',')
        .map(|e| e.split(';').next().unwrap_or("").trim())
        .find_map(|m| match m {
            "image/jpeg" | "image/*" | "*/*" | "" => Some(Format::Jpeg { quality }),
            "image/png" => Some(Format::Png),
            _ => None,
        })
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!("rendered images are image/jpeg or image/png; Accept was {accept:?}"),
            )
        })?;
    Ok(RenderOptions {
        frame,
        window,
        viewport,
        format,
    })
}

pub(crate) async fn rendered(
    state: GatewayState,
    headers: HeaderMap,
    raw: Option<String>,
    (study, series, instance): Target,
    frame: u32,
    thumbnail: bool,
) -> Result<Response, Problem> {
    use crate::rendered::{RenderError, render};
    let identity = state.auth.identify(&headers)?;
    let options = render_options(&headers, raw.as_deref(), frame, thumbnail)?;
    let ingest = blob_store(&state)?;
    let opened = open_target(
        &state,
        &identity,
        Act::ReadImages,
        if thumbnail {
            AccessAction::Thumbnail
        } else {
            AccessAction::Rendered
        },
        (&study, series.as_deref(), instance.as_deref()),
    )
    .await?;
    // A study or series thumbnail shows its first instance.
    let original = first_original(ingest, &opened, &study).await?;
    let media = options.format.media_type();
    let image = tokio::task::spawn_blocking(move || render(&original, &options))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| match e {
            RenderError::NoSuchFrame { .. } => Problem::not_found(e.to_string()),
            RenderError::Unreadable(_) | RenderError::Undecodable(..) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Cannot render",
                e.to_string(),
            ),
            RenderError::Encode(_) => Problem::internal(e.to_string()),
        })?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, media)], image).into_response())
}

/// Every `/rendered` and `/thumbnail` route: the path names the study and optionally the series,
/// instance and frame; the last segment says whether a thumbnail is wanted.
pub async fn rendered_resource(
    State(state): State<GatewayState>,
    Path(params): PathParams,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let frame = match params.get("frame") {
        Some(f) => parse_frame(f)?,
        None => 1,
    };
    let thumbnail = uri.path().ends_with("/thumbnail");
    rendered(state, headers, raw, target(&params)?, frame, thumbnail).await
}

fn parse_frame(frame: &str) -> Result<u32, Problem> {
    frame.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Problem::bad_request(format!(
            "a frame number is a whole number from 1, got {frame:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const J2K: &str = "1.2.840.10008.1.2.4.90";

    fn catalog_study(modalities: &str, name: Option<&str>) -> CatalogStudy {
        CatalogStudy {
            institution: "hosp-a".into(),
            study_uid: "1.2.3".into(),
            patient_id: Some("PID\"1".into()),
            patient_name: name.map(Into::into),
            patient_birth_date: None,
            patient_sex: Some("F".into()),
            study_date: Some("20261204".into()),
            study_time: None,
            accession_number: Some("ACC1".into()),
            study_description: None,
            referring_physician: Some("Doe^Jane".into()),
            modalities: modalities.into(),
            series_count: 2,
            instance_count: 300,
            size_bytes: 1,
            status: "stable".into(),
            storage_tier: "hot".into(),
            retain_until: None,
            registered_at: "2026-12-04T00:00:00Z".into(),
            updated_position: 1,
        }
    }

    /// A study row serialized straight into the answer is the DICOM JSON the tree gives, in
    /// the same attribute order, absent values as a VR alone.
    #[test]
    fn a_study_row_serializes_as_its_dicom_json() {
        let study = catalog_study("CT\\MR", Some("Roe^Ann"));
        let expected = json!({
            "00080020": {"vr": "DA", "Value": ["20261204"]},
            "00080030": {"vr": "TM"},
            "00080050": {"vr": "SH", "Value": ["ACC1"]},
            "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
            "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00081030": {"vr": "LO"},
            "00081190": {"vr": "UR", "Value": ["http://h/dicom-web/studies/1.2.3"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Ann"}]},
            "00100020": {"vr": "LO", "Value": ["PID\"1"]},
            "00100030": {"vr": "DA"},
            "00100040": {"vr": "CS", "Value": ["F"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00201206": {"vr": "IS", "Value": [2]},
            "00201208": {"vr": "IS", "Value": [300]},
        });
        let base = "http://h/dicom-web";
        let direct = serde_json::to_string(&StudyAttributes {
            study: &study,
            base,
        })
        .expect("serializes");
        assert_eq!(
            direct,
            serde_json::to_string(&expected).expect("serializes")
        );
        assert_eq!(study_json(&study, base), expected);

        let bare = catalog_study("", None);
        let json = study_json(&bare, base);
        assert_eq!(json["00080061"], json!({"vr": "CS", "Value": []}));
        assert_eq!(json["00100010"], json!({"vr": "PN"}));
    }

    #[test]
    fn a_frame_list_drops_repeats_and_names_at_most_the_cap() {
        let repeats = vec!["1"; 6000].join(",");
        assert_eq!(parse_frame_list(&repeats).expect("repeats"), vec![1]);
        assert_eq!(parse_frame_list("3, 1,3,2,1").expect("list"), vec![3, 1, 2]);
        let distinct: Vec<String> = (1..=MAX_FRAME_LIST as u32 + 1)
            .map(|n| n.to_string())
            .collect();
        let too_many = parse_frame_list(&distinct.join(",")).expect_err("over the cap");
        assert!(too_many.detail.contains("at most"), "{}", too_many.detail);
        assert!(parse_frame_list(&distinct[..MAX_FRAME_LIST].join(",")).is_ok());
        for bad in ["0", "1,,2", "x", "1,-2"] {
            let e = parse_frame_list(bad).expect_err("not a frame list");
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn a_study_uid_list_holds_distinct_uids_up_to_the_cap() {
        let q = parse_study_query(Some("StudyInstanceUID=1.2,1.3,1.2")).expect("a list");
        assert_eq!(q.study_uids, vec!["1.2".to_string(), "1.3".to_string()]);
        let many: Vec<String> = (0..=MAX_QIDO_UIDS).map(|n| format!("1.{n}")).collect();
        let raw = format!("StudyInstanceUID={}", many.join(","));
        assert!(parse_study_query(Some(&raw)).is_err());
        assert!(parse_study_query(Some("StudyInstanceUID=1.2%0d%0a")).is_err());
    }

    fn answer(
        accept: Option<&str>,
        stored: &str,
        encapsulated: bool,
    ) -> Result<FrameAnswer, String> {
        negotiate_frames(accept, stored, encapsulated)
    }

    #[test]
    fn compressed_frames_are_decoded_only_when_octet_stream_means_explicit_little_endian() {
        let stored = |media| {
            Ok(FrameAnswer {
                media,
                decode: false,
            })
        };
        let decoded = Ok(FrameAnswer {
            media: "application/octet-stream",
            decode: true,
        });
        assert_eq!(answer(None, J2K, true), stored("image/jp2"));
        assert_eq!(answer(Some("*/*"), J2K, true), stored("image/jp2"));
        let octets = r#"multipart/related; type="application/octet-stream""#;
        assert_eq!(answer(Some(octets), J2K, true), decoded);
        let explicit = format!("{octets}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}");
        assert_eq!(answer(Some(&explicit), J2K, true), decoded);
        let any = format!("{octets}; transfer-syntax=*");
        assert_eq!(
            answer(Some(&any), J2K, true),
            stored("application/octet-stream")
        );
        let jp2 = r#"multipart/related; type="image/jp2""#;
        assert_eq!(answer(Some(jp2), J2K, true), stored("image/jp2"));
        // Uncompressed frames are never decoded: they are native already.
        assert_eq!(
            answer(Some(octets), EXPLICIT_VR_LITTLE_ENDIAN, false),
            stored("application/octet-stream")
        );
    }

    #[test]
    fn what_cannot_be_served_is_refused_naming_what_to_ask_for() {
        let jpeg = r#"multipart/related; type="image/jpeg""#;
        let why = answer(Some(jpeg), J2K, true).expect_err("a JPEG of a JPEG 2000 frame");
        assert!(
            why.contains("image/jp2") && why.contains("transfer-syntax=*"),
            "{why}"
        );
        let other = r#"multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2"#;
        assert!(answer(Some(other), J2K, true).is_err());
        let why = answer(Some(jpeg), EXPLICIT_VR_LITTLE_ENDIAN, false).expect_err("uncompressed");
        assert!(why.contains("application/octet-stream"), "{why}");
    }
}
