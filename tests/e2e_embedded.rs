//! The embedded hub as a user runs it: `hub serve` on a data directory, its HTTP endpoints,
//! `hub replay`, and refusal of bad configuration.

use std::time::{Duration, Instant};

use hub_e2e::{Server, hub};
use hub_events::catalog::{IngestSource, SeriesInstances, StoredInstance, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, SqliteEventStore, SqliteSync, StoreMetrics,
    StreamId,
};

/// Writes a history into the data directory's log, as an earlier run of the hub would have.
async fn write_history(data_dir: &std::path::Path, studies: usize) -> u64 {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let store = SqliteEventStore::open(
        &data_dir.join("events.sqlite"),
        SqliteSync::Full,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("open log");
    for i in 0..studies {
        let study = format!("1.2.826.0.9.{i}");
        let meta = EventMetadata::new("hosp-a", "ae:CT01");
        let events = [
            StudyEvent::StudyRegistered {
                study_uid: study.clone(),
                owner: "hosp-a".into(),
                patient_id: Some(format!("P{i}")),
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
                study_uid: study.clone(),
                source: IngestSource::Dimse {
                    calling_ae: "CT01".into(),
                    association_id: format!("a{i}"),
                },
                series: vec![SeriesInstances {
                    series_uid: format!("{study}.1"),
                    modality: Some("CT".into()),
                    series_number: Some(1),
                    series_description: None,
                    instances: vec![StoredInstance {
                        sop_instance_uid: format!("{study}.1.1"),
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                        instance_number: Some(1),
                        blob_key: format!("{study}/1.dcm"),
                        size_bytes: 1234,
                        sha256: "cd".repeat(32),
                    }],
                }],
            },
        ];
        store
            .append(
                &StreamId::new(Family::Study, &study),
                ExpectedVersion::NoStream,
                events
                    .iter()
                    .map(|e| e.to_new_event(meta.clone()))
                    .collect(),
            )
            .await
            .expect("append");
    }
    store.head().await.expect("head")
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_embedded_hub_serves_health_metrics_and_the_log_then_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let head = write_history(&data, 30).await;
    assert_eq!(head, 60);

    let server = Server::start(&data);
    let health = server.get_json("/healthz");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["head_position"], 60);

    // The log, paged in order, decoded, with the full envelope.
    let mut after = 0;
    let mut positions = Vec::new();
    loop {
        let page = server.get_json(&format!("/events?after={after}&limit=25"));
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            break;
        }
        for e in &events {
            positions.push(e["position"].as_u64().expect("position"));
            assert!(e["error"].is_null(), "{e}");
            assert_eq!(e["metadata"]["tenant"], "hosp-a");
            assert!(e["event_id"].as_str().is_some_and(|id| id.len() == 36));
        }
        assert_eq!(
            events[0]["data"]["type"],
            if after % 2 == 0 {
                "StudyRegistered"
            } else {
                "InstancesStored"
            }
        );
        after = page["next_after"].as_u64().expect("next_after");
    }
    assert_eq!(positions, (1..=60).collect::<Vec<_>>());

    let (status, body) = server.get("/events?limit=5000");
    assert_eq!(status, 400);
    assert!(body.contains("`limit`"), "{body}");
    let (status, _) = server.get("/no/such/thing");
    assert_eq!(status, 404);

    // The projection catches up at start; the metrics show it with real counters.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = server.get("/metrics");
        let position = metric(
            &text,
            "hub_projection_position{projection=\"study_catalog\"}",
        );
        if position == Some(60.0) {
            assert_eq!(
                metric(
                    &text,
                    "hub_projection_lag_events{projection=\"study_catalog\"}"
                ),
                Some(0.0)
            );
            assert_eq!(
                metric(&text, "hub_log_head_position"),
                Some(0.0),
                "this process appended nothing"
            );
            assert_eq!(
                metric(&text, "hub_events_appended_total{family=\"study\"}"),
                Some(0.0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projection never caught up: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One process per data directory: a rebuild waits until the server is gone.
    let busy = hub(&["replay", "--data-dir", data.to_str().expect("utf8")], &[]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("stop it first"));

    assert!(server.stop().success(), "SIGTERM stops the hub cleanly");

    let replay = hub(&["replay", "--data-dir", data.to_str().expect("utf8")], &[]);
    let out = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(out.contains("rebuilt study_catalog: 60 events"), "{out}");

    // The rebuilt read model is what the catalog shows.
    let rm = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        data.join("readmodels.sqlite").display()
    ))
    .await
    .expect("read models");
    let (studies, instances): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), SUM(instance_count) FROM study_catalog WHERE institution = 'hosp-a'",
    )
    .fetch_one(&rm)
    .await
    .expect("query");
    assert_eq!((studies, instances), (30, 30));
}

#[tokio::test]
async fn a_corrupt_event_in_the_log_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_history(&data, 3).await;
    let log = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        data.join("events.sqlite").display()
    ))
    .await
    .expect("open log");
    sqlx::query("UPDATE events SET payload = '{broken' WHERE position = 3")
        .execute(&log)
        .await
        .expect("corrupt");
    log.close().await;

    let server = Server::start(&data);
    let page = server.get_json("/events?after=0&limit=10");
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 6, "the reader goes on past the corrupt event");
    assert!(events[2]["data"].is_null());
    assert!(
        events[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("position 3")),
        "{}",
        events[2]
    );
    assert!(events[3]["error"].is_null());

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = server.get("/metrics");
        if metric(
            &text,
            "hub_projection_position{projection=\"study_catalog\"}",
        ) == Some(6.0)
        {
            assert_eq!(
                metric(
                    &text,
                    "hub_projection_dead_letters_total{projection=\"study_catalog\"}"
                ),
                Some(1.0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projection stuck at the corrupt event: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.stop().success());
}

#[test]
fn a_bad_configuration_value_stops_the_hub_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let out = hub(
        &["serve", "--data-dir", data],
        &[("HUB_HTTP", "not-an-address")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`http`") && err.contains("HUB_HTTP") && err.contains("127.0.0.1:8080"),
        "{err}"
    );

    let file = dir.path().join("hub.toml");
    std::fs::write(&file, "sqlite_sync = \"fast\"\n").expect("write");
    let out = hub(
        &[
            "serve",
            "--data-dir",
            data,
            "--config",
            file.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`sqlite_sync`") && err.contains("hub.toml") && err.contains("\"fast\""),
        "{err}"
    );

    let out = hub(
        &["serve", "--data-dir", data, "--http", "127.0.0.1:1"],
        &[("HUB_LOG", "==")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`log`"));
}

/// A search is recorded before it is answered, even while its answer is built beside the
/// append: when the audit event cannot be appended (another process holds the log's write lock
/// past the busy timeout), QIDO-RS answers 503 naming the audit trail and shows no study; once
/// the lock is released it answers again, and the refused search left no audit row.
#[tokio::test]
async fn a_search_whose_audit_event_cannot_be_recorded_is_not_served() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_history(&data, 3).await;
    let server = Server::start(&data);
    // A token acts for a registered institution only.
    let (status, body) = hub_e2e::http_request(
        server.addr,
        "POST",
        "/institutions",
        Some(&server.operator),
        Some(r#"{"institution_id": "hosp-a", "name": "A", "kind": "hospital"}"#),
    )
    .expect("register hosp-a");
    assert_eq!(status, 201, "{body}");
    let radiologist = server.token("rad-1", "radiologist", "hosp-a");
    let search = || {
        hub_e2e::http_request(
            server.addr,
            "GET",
            "/dicom-web/studies",
            Some(&radiologist),
            None,
        )
        .expect("QIDO-RS")
    };
    let studies = |body: &str| -> usize {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = search();
        if status == 200 && studies(&body) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let audit_rows = || async {
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            data.join("readmodels-audit.sqlite").display()
        ))
        .await
        .expect("audit file");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_trail")
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    };
    let recorded = loop {
        let n = audit_rows().await;
        if n >= 3 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(recorded >= 3, "the first search's rows: {recorded}");

    let mut holder = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        data.join("events.sqlite").display()
    ))
    .await
    .expect("a second writer of the log");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("the write lock");
    let (status, body) = search();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit trail"), "{body}");
    assert!(!body.contains("1.2.826.0.9."), "no study shown: {body}");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    holder.close().await.expect("close");
    assert_eq!(
        audit_rows().await,
        recorded,
        "the refused search left no row"
    );

    let (status, body) = search();
    assert_eq!(status, 200, "{body}");
    assert_eq!(studies(&body), 3);
}
