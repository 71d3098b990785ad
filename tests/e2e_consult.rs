//! Remote consultation end to end against `hub serve` as deployed (bearer tokens): an expert is
//! declared, a consultation asked for, booked and accepted; the expert finds the study in a
//! search during the window and not after; a double booking is refused naming the other
//! consultation; bad input is refused naming the field; a report is drafted, signed, refused a
//! change and amended; turnaround shows in the view and in `/metrics`.

use chrono::{Duration, SecondsFormat, Utc};
use hub_e2e::{Server, http_request};
use hub_events::catalog::{IngestSource, SeriesInstances, StoredInstance, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, SqliteEventStore, SqliteSync, StoreMetrics,
    StreamId,
};
use serde_json::{Value, json};

const STUDY: &str = "1.2.826.0.77.1";

async fn write_study(data_dir: &std::path::Path) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let store = SqliteEventStore::open(
        &data_dir.join("events.sqlite"),
        SqliteSync::Full,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("open log");
    let events = [
        StudyEvent::StudyRegistered {
            study_uid: STUDY.into(),
            owner: "hosp-a".into(),
            patient_id: Some("P1".into()),
            patient_name: None,
            patient_birth_date: None,
            patient_sex: None,
            study_date: Some("20261124".into()),
            study_time: None,
            accession_number: None,
            study_description: None,
            referring_physician: None,
        },
        StudyEvent::InstancesStored {
            study_uid: STUDY.into(),
            source: IngestSource::Dimse {
                calling_ae: "CT01".into(),
                association_id: "a1".into(),
            },
            series: vec![SeriesInstances {
                series_uid: format!("{STUDY}.1"),
                modality: Some("CT".into()),
                series_number: Some(1),
                series_description: None,
                instances: vec![StoredInstance {
                    sop_instance_uid: format!("{STUDY}.1.1"),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                    instance_number: Some(1),
                    blob_key: format!("{STUDY}/1.dcm"),
                    size_bytes: 1234,
                    sha256: "cd".repeat(32),
                }],
            }],
        },
    ];
    let meta = EventMetadata::new("hosp-a", "ae:CT01");
    store
        .append(
            &StreamId::new(Family::Study, STUDY),
            ExpectedVersion::NoStream,
            events
                .iter()
                .map(|e| e.to_new_event(meta.clone()))
                .collect(),
        )
        .await
        .expect("append");
}

struct Client<'a> {
    server: &'a Server,
    token: String,
}

impl Client<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(
            self.server.addr,
            method,
            path,
            Some(&self.token),
            body.as_deref(),
        )
        .expect("HTTP request");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>, expected: u16) -> Value {
        let (status, value) = self.call(method, path, body);
        assert_eq!(status, expected, "{method} {path}: {value}");
        value
    }

    fn sees_study(&self) -> bool {
        let (status, value) = self.call(
            "GET",
            &format!("/dicom-web/studies?StudyInstanceUID={STUDY}"),
            None,
        );
        status == 200 && value.as_array().is_some_and(|a| !a.is_empty())
    }
}

fn at(t: chrono::DateTime<Utc>) -> String {
    t.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("offset"))
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[tokio::test]
async fn a_consultation_opens_the_study_to_the_expert_for_its_window_and_ends_in_a_signed_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_study(&data).await;
    let server = Server::start_secure(&data, &[]);
    let as_ = |sub: &str, role: &str, inst: &str| Client {
        server: &server,
        token: server.token(sub, role, inst),
    };
    let root = as_("operator", "hub_admin", "hub");
    for i in ["hosp-a", "hosp-c"] {
        root.ok(
            "POST",
            "/institutions",
            Some(json!({"institution_id": i, "name": i, "kind": "hospital"})),
            201,
        );
    }
    let admin_c = as_("admin", "hospital_admin", "hosp-c");
    for expert in ["bob", "carl"] {
        admin_c.ok(
            "POST",
            "/experts",
            Some(json!({"expert": expert, "specialty": "thoracic"})),
            201,
        );
    }
    let alice = as_("alice", "physician", "hosp-a");
    let bob = as_("bob", "radiologist", "hosp-c");
    let carl = as_("carl", "radiologist", "hosp-c");
    let ask = |expert: &str| {
        json!({
            "study_uid": STUDY, "expert_institution": "hosp-c", "expert": expert,
            "urgency": "urgent", "question": "Nodule in the right upper lobe: malignant?"
        })
    };

    // Bad input names the field.
    let (status, p) = alice.call("POST", "/consults", Some(ask("nobody")));
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("expert:"),
        "{p}"
    );
    let mut unknown_study = ask("bob");
    unknown_study["study_uid"] = json!("1.2.3.999");
    let (status, p) = alice.call("POST", "/consults", Some(unknown_study));
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("study_uid:"),
        "{p}"
    );

    let consult = alice.ok("POST", "/consults", Some(ask("bob")), 201);
    let id = consult["consult_id"].as_str().expect("id").to_owned();
    assert_eq!(consult["state"], "requested");
    let (status, p) = alice.call(
        "POST",
        &format!("/consults/{id}/schedule"),
        Some(json!({"starts_at": "2030-01-31T09:00:00", "ends_at": "2030-01-31T10:00:00+08:00"})),
    );
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("starts_at:"),
        "{p}"
    );

    // The window is open now (it started ten minutes ago) and the expert is not in yet.
    assert!(!bob.sees_study());
    let now = Utc::now();
    let (start, end) = (now - Duration::minutes(10), now + Duration::hours(1));
    let booked = alice.ok(
        "POST",
        &format!("/consults/{id}/schedule"),
        Some(json!({"starts_at": at(start), "ends_at": at(end)})),
        200,
    );
    assert_eq!(booked["state"], "scheduled");
    assert_eq!(booked["time_zone"], "+08:00");
    // Accepting is the expert's, not the requester's; the requester gets a 403.
    alice.ok("POST", &format!("/consults/{id}/accept"), None, 403);
    let (status, p) = bob.call("POST", &format!("/consults/{id}/complete"), None);
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("is scheduled"),
        "{p}"
    );
    bob.ok(
        "POST",
        &format!("/consults/{id}/accept"),
        Some(json!({})),
        200,
    );
    assert!(
        bob.sees_study(),
        "the expert sees the study during the window"
    );
    assert!(!carl.sees_study(), "a colleague who takes no part does not");
    // The expert's reads are audited as consultation reads, for the owner to see.
    bob.ok("GET", &format!("/studies/{STUDY}/reports"), None, 200);
    let admin_a = as_("admin", "hospital_admin", "hosp-a");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = admin_a.ok("GET", &format!("/audit?study={STUDY}"), None, 200);
        let seen = audit.as_array().into_iter().flatten().any(|row| {
            row["subject"] == "bob"
                && row["purpose"] == "consultation"
                && row["decision"] == "permit"
        });
        if seen {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no consultation read of bob's in {audit}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Double booking.
    let second = alice.ok("POST", "/consults", Some(ask("bob")), 201);
    let second_id = second["consult_id"].as_str().expect("id");
    let (status, p) = alice.call(
        "POST",
        &format!("/consults/{second_id}/schedule"),
        Some(json!({"starts_at": at(now + Duration::minutes(30)), "ends_at": at(now + Duration::minutes(90))})),
    );
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap_or_default().contains(&id),
        "{p}"
    );

    // Queues and calendar.
    let incoming = admin_c.ok("GET", "/consults/queue?direction=incoming", None, 200);
    assert_eq!(incoming["consults"].as_array().map(Vec::len), Some(2));
    let calendar = bob.ok("GET", "/experts/hosp-c/bob/calendar", None, 200);
    assert_eq!(calendar["consults"][0]["consult_id"], json!(id));

    // The report: drafted, signed, never changed, amended.
    let reports = format!("/studies/{STUDY}/reports");
    let draft = bob.ok(
        "POST",
        &reports,
        Some(json!({"findings": "8 mm nodule", "impression": "indeterminate", "consult_id": id})),
        201,
    );
    let report = draft["report_id"].as_str().expect("report id").to_owned();
    bob.ok("POST", &format!("{reports}/{report}/sign"), None, 200);
    bob.ok(
        "POST",
        &reports,
        Some(json!({"report_id": report, "findings": "changed", "impression": "changed"})),
        409,
    );
    let amended = bob.ok(
        "POST",
        &format!("{reports}/{report}/amend"),
        Some(json!({"findings": "8 mm spiculated nodule", "impression": "suspicious", "reason": "second read"})),
        201,
    );
    assert_eq!(amended["amends"], json!(report));
    let listed = alice.ok("GET", &reports, None, 200);
    assert_eq!(
        listed["versions"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["versions"][0]["impression"], "indeterminate");
    carl.ok("GET", &reports, None, 404);

    // Completed: turnaround is known, and the study is closed to the expert again.
    bob.ok(
        "POST",
        &format!("/consults/{id}/complete"),
        Some(json!({"report_id": report})),
        200,
    );
    assert!(!bob.sees_study());
    let turnaround = alice.ok("GET", "/consults/turnaround", None, 200);
    assert_eq!(turnaround["by_institution"][0]["institution"], "hosp-a");
    assert_eq!(turnaround["by_institution"][0]["reported"], 1);
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("hub_consult_turnaround_seconds_mean{institution=\"hosp-a\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("hub_consults{"), "{metrics}");
}
