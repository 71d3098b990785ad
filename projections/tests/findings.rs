//! The findings read model: one row per model version and study, per owner, rebuilt from the log.

use std::sync::Arc;

use hub_events::catalog::{DiagnosisEvent, Finding};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, SqliteEventStore, SqliteSync,
    StoreMetrics, StreamId,
};
use hub_projections::{Findings, ProjectionMetrics, ReadModelDb, rebuild};

fn recorded(study: &str, version: &str, label: &str) -> DiagnosisEvent {
    DiagnosisEvent::AiFindingsRecorded {
        study_uid: study.into(),
        model_id: "ct-ref".into(),
        model_version: version.into(),
        findings: vec![Finding {
            series_uid: format!("{study}.1"),
            sop_instance_uid: format!("{study}.1.1"),
            frame: None,
            label: label.into(),
            score: 0.75,
            bbox: Some([10.0, 20.0, 30.0, 40.0]),
        }],
        inference_ms: 120,
        model_sha256: "ab".repeat(32),
        slices: 3,
    }
}

#[tokio::test]
async fn each_model_version_keeps_its_first_outcome_per_owner_and_study() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(
            &dir.path().join("events.sqlite"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await
        .expect("store"),
    );
    let append = |tenant: &'static str, event: DiagnosisEvent| {
        let store = store.clone();
        async move {
            let study = match &event {
                DiagnosisEvent::AiFindingsRecorded { study_uid, .. }
                | DiagnosisEvent::AiInferenceFailed { study_uid, .. } => study_uid.clone(),
                _ => unreachable!("only AI events here"),
            };
            store
                .append(
                    &StreamId::new(Family::Diagnosis, &study),
                    ExpectedVersion::Any,
                    vec![
                        HubEvent::from(event)
                            .to_new_event(EventMetadata::new(tenant, "service:inference")),
                    ],
                )
                .await
                .expect("append");
        }
    };
    append("hosp-a", recorded("1.1", "1", "bleed")).await;
    // A second outcome of the same version (a lost race) does not replace the first.
    append("hosp-a", recorded("1.1", "1", "other")).await;
    append("hosp-a", recorded("1.1", "2", "bleed")).await;
    append(
        "hosp-a",
        DiagnosisEvent::AiInferenceFailed {
            study_uid: "1.2".into(),
            model_id: "ct-ref".into(),
            reason: "instance 1.2.1.1: frame 1 cannot be decoded".into(),
            model_version: "1".into(),
            model_sha256: "cd".repeat(32),
        },
    )
    .await;
    append("hosp-b", recorded("1.1", "1", "theirs")).await;

    let db = ReadModelDb::open(&dir.path().join("readmodels.sqlite"))
        .await
        .expect("read models");
    rebuild(
        store.clone(),
        db.clone(),
        Arc::new(Findings),
        ProjectionMetrics::unregistered(),
        |_| {},
    )
    .await
    .expect("rebuilds");

    let rows = Findings::for_study(db.pool(), "hosp-a", "1.1")
        .await
        .expect("query");
    assert_eq!(
        rows.iter()
            .map(|r| r.model_version.as_str())
            .collect::<Vec<_>>(),
        vec!["1", "2"]
    );
    assert_eq!(rows[0].outcome, "recorded");
    assert_eq!(rows[0].findings()[0].label, "bleed");
    assert_eq!(rows[0].findings()[0].bbox, Some([10.0, 20.0, 30.0, 40.0]));
    assert_eq!((rows[0].slices, rows[0].inference_ms), (Some(3), Some(120)));

    let failed = Findings::for_study(db.pool(), "hosp-a", "1.2")
        .await
        .expect("query");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, "failed");
    assert!(
        failed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("frame 1"))
    );
    assert!(failed[0].findings().is_empty());

    let theirs = Findings::for_study(db.pool(), "hosp-b", "1.1")
        .await
        .expect("query");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].findings()[0].label, "theirs");
}
