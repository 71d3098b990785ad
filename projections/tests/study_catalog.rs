//! The study catalog end to end: live projection, redelivery, rebuild, dead letters, tenants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use hub_events::catalog::{IngestSource, SeriesInstances, StorageTier, StoredInstance, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, SqliteEventStore, SqliteSync, StoreMetrics,
    StreamId,
};
use hub_projections::{ProjectionMetrics, ProjectionRunner, ReadModelDb, StudyCatalog, rebuild};
use sqlx::Connection;
use uuid::Uuid;

struct World {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    store: Arc<dyn EventStore>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let store = SqliteEventStore::open(
        &path.join("events.sqlite"),
        SqliteSync::Normal,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("store");
    World {
        _dir: dir,
        dir: path,
        store: Arc::new(store),
    }
}

async fn append(store: &Arc<dyn EventStore>, tenant: &str, study: &str, events: Vec<StudyEvent>) {
    let meta = EventMetadata::new(tenant, "service:ingest");
    let new = events
        .iter()
        .map(|e| e.to_new_event(meta.clone()))
        .collect();
    store
        .append(
            &StreamId::new(Family::Study, study),
            ExpectedVersion::Any,
            new,
        )
        .await
        .expect("append");
}

fn registered(study: &str, owner: &str, patient: &str) -> StudyEvent {
    StudyEvent::StudyRegistered {
        study_uid: study.into(),
        owner: owner.into(),
        patient_id: Some(patient.into()),
        patient_name: Some(format!("DOE^{patient}")),
        patient_birth_date: Some("19700101".into()),
        patient_sex: Some("F".into()),
        study_date: Some("20261124".into()),
        study_time: None,
        accession_number: Some(format!("ACC-{study}")),
        study_description: Some("CT CHEST".into()),
        referring_physician: None,
    }
}

fn stored(study: &str, series: &str, modality: &str, first: u32, n: u32) -> StudyEvent {
    StudyEvent::InstancesStored {
        study_uid: study.into(),
        source: IngestSource::StowRs {
            request_id: Uuid::now_v7().to_string(),
        },
        series: vec![SeriesInstances {
            series_uid: series.into(),
            modality: Some(modality.into()),
            series_number: Some(1),
            series_description: None,
            instances: (first..first + n)
                .map(|i| StoredInstance {
                    sop_instance_uid: format!("{series}.{i}"),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                    instance_number: Some(i as i32),
                    blob_key: format!("blobs/{series}.{i}"),
                    size_bytes: 1000,
                    sha256: "00".repeat(32),
                })
                .collect(),
        }],
    }
}

/// A varied history: several institutions, studies arriving in several requests, corrections,
/// retention, tiering, purges, and events of other families that the catalog ignores.
async fn history(store: &Arc<dyn EventStore>, studies: usize) {
    for i in 0..studies {
        let tenant = ["hosp-a", "hosp-b", "hosp-c"][i % 3];
        let study = format!("1.2.826.0.1.{i}");
        append(
            store,
            tenant,
            &study,
            vec![registered(&study, tenant, &format!("P{i}"))],
        )
        .await;
        append(
            store,
            tenant,
            &study,
            vec![stored(&study, &format!("{study}.1"), "CT", 0, 5)],
        )
        .await;
        append(
            store,
            tenant,
            &study,
            vec![stored(&study, &format!("{study}.2"), "SR", 0, 1)],
        )
        .await;
        if i % 2 == 0 {
            append(
                store,
                tenant,
                &study,
                vec![stored(&study, &format!("{study}.1"), "CT", 5, 3)],
            )
            .await;
        }
        let mut tail = vec![StudyEvent::StudyStabilized {
            study_uid: study.clone(),
            series_count: 2,
            instance_count: 6,
            modalities: vec!["CT".into(), "SR".into()],
        }];
        if i % 4 == 1 {
            tail.push(StudyEvent::StudyMetadataCorrected {
                study_uid: study.clone(),
                changes: BTreeMap::from([
                    ("PatientName".to_string(), Some("ROE^JANE".to_string())),
                    ("AccessionNumber".to_string(), None),
                    ("InstitutionName".to_string(), Some("ignored".to_string())),
                ]),
                reason: "registration error".into(),
            });
        }
        if i % 5 == 2 {
            tail.push(StudyEvent::RetentionSet {
                study_uid: study.clone(),
                retain_until: NaiveDate::from_ymd_opt(2041, 11, 24).expect("date"),
                rule: "15 years".into(),
            });
            tail.push(StudyEvent::StorageTierChanged {
                study_uid: study.clone(),
                from: StorageTier::Hot,
                to: StorageTier::Cold,
            });
        }
        if i % 7 == 3 {
            tail.push(StudyEvent::StudyPurged {
                study_uid: study.clone(),
                reason: "retention ended".into(),
                purged_at: Utc::now(),
            });
        }
        append(store, tenant, &study, tail).await;
        register_institution(store, &format!("inst-{i}")).await;
    }
}

/// An event of another family, which the catalog does not use.
async fn register_institution(store: &Arc<dyn EventStore>, id: &str) {
    let e = hub_events::catalog::InstitutionEvent::InstitutionRegistered {
        institution_id: id.into(),
        name: "Hospital".into(),
        kind: hub_events::catalog::InstitutionKind::Hospital,
        ae_titles: vec![],
    };
    store
        .append(
            &StreamId::new(Family::Institution, id),
            ExpectedVersion::Any,
            vec![e.to_new_event(EventMetadata::new("hub", "user:admin"))],
        )
        .await
        .expect("append other family");
}

async fn wait_for(db: &ReadModelDb, name: &str, position: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.checkpoint(name).await.expect("checkpoint") < position {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection did not reach {position}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_catalog_equals_the_live_one() {
    let w = world().await;
    let live_db = ReadModelDb::open(&w.dir.join("live.sqlite"))
        .await
        .expect("db");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = ProjectionRunner::new(
        w.store.clone(),
        live_db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
    );
    let live = tokio::spawn(runner.run(stopped));
    // Appended while the projection runs live.
    history(&w.store, 60).await;
    let head = w.store.head().await.expect("head");
    wait_for(&live_db, "study_catalog", head).await;
    let _ = stop.send(true);
    live.await.expect("join").expect("runner");

    let live_rows = StudyCatalog::snapshot(live_db.pool())
        .await
        .expect("snapshot");
    assert_eq!(live_rows.0.len(), 60);
    assert_eq!(live_rows.1.len(), 120);
    let s0 = &live_rows
        .0
        .iter()
        .find(|s| s.study_uid == "1.2.826.0.1.0")
        .expect("study 0");
    assert_eq!(
        (s0.instance_count, s0.series_count, s0.size_bytes),
        (9, 2, 9000)
    );
    assert_eq!(
        (s0.modalities.as_str(), s0.status.as_str()),
        ("CT\\SR", "stable")
    );
    let s1 = live_rows
        .0
        .iter()
        .find(|s| s.study_uid == "1.2.826.0.1.1")
        .expect("study 1");
    assert_eq!(
        (s1.patient_name.as_deref(), s1.accession_number.as_deref()),
        (Some("ROE^JANE"), None)
    );
    assert_eq!(s1.institution, "hosp-b");
    let s2 = live_rows
        .0
        .iter()
        .find(|s| s.study_uid == "1.2.826.0.1.2")
        .expect("study 2");
    assert_eq!(
        (s2.storage_tier.as_str(), s2.retain_until.as_deref()),
        ("cold", Some("2041-11-24"))
    );
    let s3 = live_rows
        .0
        .iter()
        .find(|s| s.study_uid == "1.2.826.0.1.3")
        .expect("study 3");
    assert_eq!(s3.status, "purged");

    // Rebuild into a fresh database, and in place over the live one.
    let fresh_db = ReadModelDb::open(&w.dir.join("fresh.sqlite"))
        .await
        .expect("db");
    let mut seen = Vec::new();
    let reached = rebuild(
        w.store.clone(),
        fresh_db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
        |p| seen.push(p),
    )
    .await
    .expect("rebuild");
    assert_eq!(reached, head);
    assert_eq!(seen.last(), Some(&head), "progress reaches the head");
    assert_eq!(
        StudyCatalog::snapshot(fresh_db.pool())
            .await
            .expect("snapshot"),
        live_rows
    );

    rebuild(
        w.store.clone(),
        live_db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
        |_| {},
    )
    .await
    .expect("rebuild in place");
    assert_eq!(
        StudyCatalog::snapshot(live_db.pool())
            .await
            .expect("snapshot"),
        live_rows
    );
}

#[tokio::test]
async fn a_redelivered_batch_is_not_applied_twice() {
    let w = world().await;
    history(&w.store, 6).await;
    let db = ReadModelDb::open(&w.dir.join("rm.sqlite"))
        .await
        .expect("db");
    let runner = ProjectionRunner::new(
        w.store.clone(),
        db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
    );
    runner.prepare().await.expect("prepare");
    let events = w.store.read_all(0, 10_000).await.expect("read");
    let half = events.len() / 2;
    runner
        .apply_batch(&events[..half])
        .await
        .expect("first half");
    // A consumer that crashed before acknowledging gets the first half again, with the rest.
    runner.apply_batch(&events).await.expect("whole batch");
    let once = StudyCatalog::snapshot(db.pool()).await.expect("snapshot");
    runner.apply_batch(&events).await.expect("again");
    assert_eq!(
        StudyCatalog::snapshot(db.pool()).await.expect("snapshot"),
        once
    );
    let s0 = once
        .0
        .iter()
        .find(|s| s.study_uid == "1.2.826.0.1.0")
        .expect("study 0");
    assert_eq!(s0.instance_count, 9, "instances counted once");
    assert_eq!(
        db.checkpoint("study_catalog").await.expect("cp"),
        events.len() as u64
    );
}

#[tokio::test]
async fn an_undecodable_event_becomes_a_dead_letter_and_the_projection_goes_on() {
    let w = world().await;
    append(
        &w.store,
        "hosp-a",
        "9.1",
        vec![registered("9.1", "hosp-a", "P1")],
    )
    .await;
    let mut bad = registered("9.2", "hosp-a", "P2").to_new_event(EventMetadata::new("hosp-a", "x"));
    bad.event_type = "StudyTeleported".into();
    w.store
        .append(
            &StreamId::new(Family::Study, "9.2"),
            ExpectedVersion::Any,
            vec![bad],
        )
        .await
        .expect("append");
    append(
        &w.store,
        "hosp-a",
        "9.3",
        vec![registered("9.3", "hosp-a", "P3")],
    )
    .await;
    let db = ReadModelDb::open(&w.dir.join("rm.sqlite"))
        .await
        .expect("db");
    let metrics = ProjectionMetrics::unregistered();
    let reached = rebuild(
        w.store.clone(),
        db.clone(),
        Arc::new(StudyCatalog),
        metrics.clone(),
        |_| {},
    )
    .await
    .expect("rebuild goes past the bad event");
    assert_eq!(reached, 3);
    let dead = db
        .dead_letters("study_catalog")
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0, dead[0].1.as_str()), (2, "StudyTeleported"));
    assert!(dead[0].2.contains("position 2"), "{}", dead[0].2);
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&["study_catalog"])
            .get(),
        1
    );
    let (studies, total) = StudyCatalog::list(db.pool(), "hosp-a", 10, 0)
        .await
        .expect("list");
    assert_eq!(total, 2);
    assert_eq!(studies.len(), 2);
}

#[tokio::test]
async fn one_institutions_events_never_touch_another_institutions_rows() {
    let w = world().await;
    // Two hospitals happen to use the same (badly generated) Study Instance UID.
    append(
        &w.store,
        "hosp-a",
        "7.7",
        vec![
            registered("7.7", "hosp-a", "PA"),
            stored("7.7", "7.7.1", "CT", 0, 4),
        ],
    )
    .await;
    w.store
        .append(
            &StreamId::new(Family::Study, "7.7"),
            ExpectedVersion::Any,
            vec![
                registered("7.7", "hosp-b", "PB").to_new_event(EventMetadata::new("hosp-b", "x")),
                StudyEvent::StudyPurged {
                    study_uid: "7.7".into(),
                    reason: "b purges its copy".into(),
                    purged_at: Utc::now(),
                }
                .to_new_event(EventMetadata::new("hosp-b", "x")),
            ],
        )
        .await
        .expect("append");
    let db = ReadModelDb::open(&w.dir.join("rm.sqlite"))
        .await
        .expect("db");
    rebuild(
        w.store.clone(),
        db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
        |_| {},
    )
    .await
    .expect("rebuild");
    let (a, _) = StudyCatalog::list(db.pool(), "hosp-a", 10, 0)
        .await
        .expect("list a");
    let (b, _) = StudyCatalog::list(db.pool(), "hosp-b", 10, 0)
        .await
        .expect("list b");
    assert_eq!(
        (
            a[0].status.as_str(),
            a[0].instance_count,
            a[0].patient_id.as_deref()
        ),
        ("receiving", 4, Some("PA"))
    );
    assert_eq!(
        (
            b[0].status.as_str(),
            b[0].instance_count,
            b[0].patient_id.as_deref()
        ),
        ("purged", 0, Some("PB"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_runner_announces_each_applied_position_for_read_your_writes() {
    let w = world().await;
    let db = ReadModelDb::open(&w.dir.join("rm.sqlite"))
        .await
        .expect("db");
    let (tx, mut applied) = tokio::sync::watch::channel(0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = ProjectionRunner::new(
        w.store.clone(),
        db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
    )
    .announce_applied(tx);
    let live = tokio::spawn(runner.run(stopped));
    for i in 0..3 {
        append(
            &w.store,
            "hosp-a",
            &format!("5.{i}"),
            vec![registered(&format!("5.{i}"), "hosp-a", "P")],
        )
        .await;
        let head = w.store.head().await.expect("head");
        tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|p| *p >= head))
            .await
            .expect("the applied position is announced as it moves")
            .expect("runner alive");
        // Once announced, the read model shows it.
        let (_, total) = StudyCatalog::list(db.pool(), "hosp-a", 10, 0)
            .await
            .expect("list");
        assert_eq!(total, i + 1);
    }
    let _ = stop.send(true);
    live.await.expect("join").expect("runner");
}

async fn data_version(conn: &mut sqlx::SqliteConnection) -> i64 {
    sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await
        .expect("data_version")
}

async fn register_institutions(store: &Arc<dyn EventStore>, from: usize, n: usize) -> u64 {
    for i in from..from + n {
        register_institution(store, &format!("other-{i}")).await;
    }
    store.head().await.expect("head")
}

/// Every search appends an audit event; a read model that has no use for it must not pay a write
/// transaction for it, yet its position moves on, is announced at once and is stored soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_projection_does_not_want_is_not_written_but_its_position_is_stored_soon() {
    let w = world().await;
    append(
        &w.store,
        "hosp-a",
        "6.1",
        vec![registered("6.1", "hosp-a", "P")],
    )
    .await;
    let studies_at = w.store.head().await.expect("head");
    let head = register_institutions(&w.store, 0, 5).await;
    let db = ReadModelDb::open(&w.dir.join("rm.sqlite"))
        .await
        .expect("db");
    let (tx, mut applied) = tokio::sync::watch::channel(0);
    let runner = ProjectionRunner::new(
        w.store.clone(),
        db.clone(),
        Arc::new(StudyCatalog),
        ProjectionMetrics::unregistered(),
    )
    .announce_applied(tx);
    runner.prepare().await.expect("prepare");
    let events = w.store.read_all(0, 100).await.expect("read");
    let (studies, others) = events.split_at(studies_at as usize);

    assert_eq!(
        runner.apply_batch(studies).await.expect("studies"),
        studies_at
    );
    assert_eq!(
        db.checkpoint("study_catalog").await.expect("cp"),
        studies_at
    );
    // One observing connection: `data_version` is only comparable within a connection.
    let mut observer =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", w.dir.join("rm.sqlite").display()))
            .await
            .expect("observer");
    let before = data_version(&mut observer).await;
    assert_eq!(runner.apply_batch(others).await.expect("others"), head);
    assert_eq!(*applied.borrow(), head, "announced at once");
    assert_eq!(
        db.checkpoint("study_catalog").await.expect("cp"),
        studies_at,
        "nothing written for a batch of unwanted events"
    );
    // `data_version` moves when another connection commits to the file.
    assert_eq!(
        data_version(&mut observer).await,
        before,
        "no transaction committed"
    );
    // A redelivered older batch announces nothing backwards.
    runner.apply_batch(studies).await.expect("again");
    assert_eq!(*applied.borrow(), head);

    // Stored on demand, never backwards.
    runner.store_checkpoint(head).await.expect("store");
    runner
        .store_checkpoint(studies_at)
        .await
        .expect("store older");
    assert_eq!(db.checkpoint("study_catalog").await.expect("cp"), head);

    // Live: unwanted events only, and the stored checkpoint follows within CHECKPOINT_LAG.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(runner.run(stopped));
    let head = register_institutions(&w.store, 5, 3).await;
    tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|p| *p >= head))
        .await
        .expect("announced")
        .expect("runner alive");
    wait_for(&db, "study_catalog", head).await;
    // Stopped with a position not yet stored: stored on the way out.
    let head = register_institutions(&w.store, 8, 1).await;
    tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|p| *p >= head))
        .await
        .expect("announced")
        .expect("runner alive");
    let _ = stop.send(true);
    live.await.expect("join").expect("runner");
    assert_eq!(db.checkpoint("study_catalog").await.expect("cp"), head);
    let (_, total) = StudyCatalog::list(db.pool(), "hosp-a", 10, 0)
        .await
        .expect("list");
    assert_eq!(total, 1);
}
