//! `GET /events?after=POS&limit=N`: the global log, in order, one page at a time, with the
//! attributes that identify a patient redacted ([`redact`]): the hub admin keeps the log and
//! reads no study data.

use axum::Json;
use axum::extract::{RawQuery, State};
use hub_events::{HubEvent, Position, RecordedEvent};
use serde::Serialize;
use serde_json::Value;

use crate::GatewayState;
use crate::problem::Problem;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
pub struct EventsQuery {
    pub after: Position,
    pub limit: usize,
}

/// Parses the query string, refusing unknown parameters and bad values with a reason.
pub fn parse_query(raw: Option<&str>) -> Result<EventsQuery, Problem> {
    let mut q = EventsQuery {
        after: 0,
        limit: DEFAULT_LIMIT,
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" => {
                q.after = value.parse().map_err(|_| {
                    Problem::bad_request(format!(
                        "query parameter `after` must be a log position (a whole number ≥ 0), got {value:?}"
                    ))
                })?
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Problem::bad_request(format!(
                            "query parameter `limit` must be a whole number from 1 to {MAX_LIMIT}, got {value:?}"
                        ))
                    })?
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?}; this endpoint takes `after` and `limit`"
                )));
            }
        }
    }
    Ok(q)
}

#[derive(Serialize)]
pub struct EventView {
    #[serde(flatten)]
    pub envelope: RecordedEvent,
    /// The decoded (and upcast) event, or `null` when it cannot be decoded.
    pub data: Option<Value>,
    /// Why it cannot be decoded, naming its position.
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct EventsPage {
    pub events: Vec<EventView>,
    /// Pass as `after` to get the next page.
    pub next_after: Position,
    pub head_position: Position,
}

pub async fn list_events(
    State(state): State<GatewayState>,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventsPage>, Problem> {
    let subject = state.auth.identify(&headers)?;
    state
        .auth
        .require(&subject, hub_policies::Act::ReadEventLog)?;
    let q = parse_query(raw.as_deref())?;
    let unavailable = |e: hub_events::StoreError| Problem::unavailable(e.to_string());
    let events = state
        .store
        .read_all(q.after, q.limit)
        .await
        .map_err(unavailable)?;
    let head = state.store.head().await.map_err(unavailable)?;
    let next_after = events.last().map_or(q.after, |e| e.position);
    let events = events.into_iter().map(redacted_view).collect();
    Ok(Json(EventsPage {
        events,
        next_after,
        head_position: head,
    }))
}

/// The value every redacted attribute shows: the attribute stays, so the event keeps its shape.
pub const REDACTED: &str = "[redacted]";

/// Attributes that identify a patient or carry free text about one: names, patient ids (local,
/// regional, national), birth date and sex, accession numbers, the referring physician, study
/// descriptions, consultation questions and report text, reasons typed by people.
const IDENTIFYING: &[&str] = &[
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "local_patient_id",
    "regional_patient_id",
    "national_id",
    "other_patient_ids",
    "accession_number",
    "referring_physician",
    "study_description",
    "series_description",
    "question",
    "findings",
    "impression",
    "reason",
];

/// Redacts the identifying attributes of one event's JSON, at any depth; returns the identifying
/// strings it removed (so the actor that names one of them can be redacted too).
///
/// - every attribute named in [`IDENTIFYING`] (unless `null`, or a list of findings: AI findings
///   are boxes and scores, not text);
/// - every value of `changes` (a metadata correction names DICOM keywords: the keywords stay);
/// - the `subject` of an access by a patient (their regional patient id).
pub fn redact(value: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    redact_into(value, &mut removed);
    removed
}

fn redact_into(value: &mut Value, removed: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| redact_into(v, removed)),
        Value::Object(map) => {
            let by_patient = map.get("role").and_then(Value::as_str) == Some("patient");
            for (key, v) in map.iter_mut() {
                let identifying = IDENTIFYING.contains(&key.as_str()) && !v.is_array()
                    || key == "subject" && by_patient;
                if identifying && !v.is_null() {
                    if let Value::String(s) = v {
                        removed.push(std::mem::take(s));
                    }
                    *v = Value::String(REDACTED.into());
                } else if key == "changes"
                    && let Value::Object(changes) = v
                {
                    for change in changes.values_mut().filter(|c| !c.is_null()) {
                        *change = Value::String(REDACTED.into());
                    }
                } else {
                    redact_into(v, removed);
                }
            }
        }
        _ => {}
    }
}

/// One stored event as `GET /events` shows it: the decoded event and the stored payload both
/// redacted (a payload that is not JSON is not shown at all), and an actor that is a redacted
/// patient id (`user:<regional id>`) redacted with it.
pub fn redacted_view(mut event: RecordedEvent) -> EventView {
    let (data, error) = match HubEvent::decode(&event) {
        Ok(decoded) => (serde_json::to_value(&decoded).ok(), None),
        Err(err) => (None, Some(err.to_string())),
    };
    let mut removed = Vec::new();
    let data = data.map(|mut d| {
        removed.extend(redact(&mut d));
        d
    });
    event.payload = match serde_json::from_str::<Value>(&event.payload) {
        Ok(mut payload) => {
            removed.extend(redact(&mut payload));
            payload.to_string()
        }
        Err(_) => REDACTED.to_owned(),
    };
    if let Some(id) = event.metadata.actor.strip_prefix("user:")
        && removed.iter().any(|r| r == id)
    {
        event.metadata.actor = format!("user:{REDACTED}");
    }
    EventView {
        envelope: event,
        data,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_events::catalog::{ConsentEvent, StudyEvent};
    use hub_events::{EventMetadata, StreamId};

    fn recorded(event: HubEvent, actor: &str) -> RecordedEvent {
        let new = event.to_new_event(EventMetadata::new("h1", actor));
        RecordedEvent {
            position: 7,
            event_id: new.event_id,
            stream_id: StreamId::new(event.family(), "1.2.3"),
            stream_version: 1,
            event_type: new.event_type,
            schema_version: new.schema_version,
            payload: new.payload,
            recorded_at: chrono::Utc::now(),
            metadata: new.metadata,
        }
    }

    /// Issue 24, class 6: the hub admin's view of the log showed PatientName and PatientID.
    #[test]
    fn the_event_log_view_redacts_what_identifies_a_patient() {
        let study = StudyEvent::StudyRegistered {
            study_uid: "1.2.3".into(),
            owner: "h1".into(),
            patient_id: Some("MRN-0042".into()),
            patient_name: Some("Doe^Jane".into()),
            patient_birth_date: Some("19800101".into()),
            patient_sex: Some("F".into()),
            study_date: Some("20261124".into()),
            study_time: None,
            accession_number: Some("ACC-77".into()),
            study_description: Some("CT head Jane Doe".into()),
            referring_physician: Some("House^Gregory".into()),
        };
        let view = redacted_view(recorded(study.into(), "user:rad-1"));
        let shown = serde_json::to_string(&view).expect("serializes");
        for secret in [
            "MRN-0042", "Doe^Jane", "19800101", "ACC-77", "Jane Doe", "House",
        ] {
            assert!(!shown.contains(secret), "{secret} is shown: {shown}");
        }
        let data = view.data.expect("decoded");
        assert_eq!(data["patient_name"], REDACTED);
        assert_eq!(data["study_uid"], "1.2.3", "structure and UIDs stay");
        assert_eq!(
            data["study_date"], "20261124",
            "non-identifying fields stay"
        );
        assert_eq!(data["study_time"], Value::Null);
        assert_eq!(view.envelope.metadata.actor, "user:rad-1");

        // A patient withdrawing their own consent: the regional id and the actor naming it.
        let withdrawn = ConsentEvent::ConsentWithdrawn {
            consent_id: uuid::Uuid::nil(),
            regional_patient_id: "RP-00ff".into(),
            reason: Some("changed my mind".into()),
        };
        let view = redacted_view(recorded(withdrawn.into(), "user:RP-00ff"));
        let shown = serde_json::to_string(&view).expect("serializes");
        assert!(!shown.contains("RP-00ff"), "{shown}");
        assert_eq!(view.envelope.metadata.actor, "user:[redacted]");
    }

    #[test]
    fn a_payload_that_is_not_json_is_not_shown() {
        let mut e = recorded(
            ConsentEvent::ConsentWithdrawn {
                consent_id: uuid::Uuid::nil(),
                regional_patient_id: "RP-1".into(),
                reason: None,
            }
            .into(),
            "user:x",
        );
        e.payload = "Doe^Jane not json".into();
        let view = redacted_view(e);
        assert_eq!(view.envelope.payload, REDACTED);
        assert!(view.error.is_some());
    }

    #[test]
    fn the_events_query_defaults_and_bounds() {
        assert_eq!(
            parse_query(None).ok(),
            Some(EventsQuery {
                after: 0,
                limit: 100
            })
        );
        assert_eq!(
            parse_query(Some("after=42&limit=7")).ok(),
            Some(EventsQuery {
                after: 42,
                limit: 7
            })
        );
        for bad in [
            "after=-1",
            "after=x",
            "limit=0",
            "limit=1001",
            "limit=",
            "foo=1",
        ] {
            let p = parse_query(Some(bad)).expect_err(bad);
            assert_eq!(p.status_code, 400);
            assert!(
                p.detail.contains('`') || p.detail.contains("unknown"),
                "{}",
                p.detail
            );
        }
    }
}
