//! Deep pages of one institution's studies (QIDO-RS `offset` ≥ `DEEP_OFFSET`, no filter) are
//! found through the per-day study counts. They must list exactly what the plain ordered query
//! lists at that offset, on SQLite and on PostgreSQL (which put studies without a StudyDate at
//! opposite ends), through registrations, date corrections, purges and stabilizations, and for a
//! catalog whose day counts were filled from its rows when the table first appeared.

mod pg_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use hub_events::catalog::{AllianceEvent, InstitutionEvent, InstitutionKind, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, HubEvent, RecordedEvent, SqliteEventStore, SqliteSync, StoreMetrics,
    StreamId,
};
use hub_policies::Relation;
use hub_projections::{
    AccessIndex, DEEP_OFFSET, Projection, ProjectionMetrics, ProjectionRunner, ReadModelDb,
    StudyCatalog, StudyQuery, Viewer,
};

const OWNER: &str = "hosp-deep";
const STUDIES: usize = 2_600;

fn record(position: u64, tenant: &str, event: &HubEvent) -> RecordedEvent {
    let new = event.to_new_event(EventMetadata::new(tenant, "user:admin"));
    RecordedEvent {
        position,
        event_id: new.event_id,
        stream_id: StreamId::new(event.family(), "x"),
        stream_version: 1,
        event_type: new.event_type,
        schema_version: new.schema_version,
        payload: new.payload,
        recorded_at: Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::seconds(position as i64),
        metadata: new.metadata,
    }
}

fn uid(i: usize) -> String {
    format!("1.2.826.0.1.3680043.10.1437.77.{i}")
}

/// A day among 40, many studies per day; one in 23 has no StudyDate and one in 97 an empty one.
fn date_of(i: usize) -> Option<String> {
    match i {
        i if i % 23 == 5 => None,
        i if i % 97 == 11 => Some(String::new()),
        i => Some(format!("202401{:02}", 1 + (i * 7919) % 28)),
    }
}

/// The catalog's events: registrations (of this institution and, interleaved, of another one),
/// then stabilizations, purges, and StudyDate corrections (to another day, to none, from none).
fn events() -> Vec<(String, HubEvent)> {
    let mut out = Vec::new();
    for i in 0..STUDIES {
        let owner = if i % 5 == 4 { "hosp-other" } else { OWNER };
        out.push((
            owner.to_string(),
            StudyEvent::StudyRegistered {
                study_uid: uid(i),
                owner: owner.into(),
                patient_id: Some(format!("P{}", i % 300)),
                patient_name: Some("DOE^DEEP".into()),
                patient_birth_date: None,
                patient_sex: None,
                study_date: date_of(i),
                study_time: None,
                accession_number: None,
                study_description: None,
                referring_physician: None,
            }
            .into(),
        ));
    }
    for i in 0..STUDIES {
        let owner = if i % 5 == 4 { "hosp-other" } else { OWNER };
        let study_uid = uid(i);
        let mut push = |e: StudyEvent| out.push((owner.to_string(), e.into()));
        if i % 3 == 0 {
            push(StudyEvent::StudyStabilized {
                study_uid: study_uid.clone(),
                series_count: 0,
                instance_count: 0,
                modalities: vec![],
            });
        }
        if i % 11 == 2 {
            push(StudyEvent::StudyPurged {
                study_uid: study_uid.clone(),
                reason: "retention ended".into(),
                purged_at: Utc::now(),
            });
        }
        // Stabilized after its purge: it must stay purged, and out of the counts.
        if i % 33 == 2 {
            push(StudyEvent::StudyStabilized {
                study_uid: study_uid.clone(),
                series_count: 0,
                instance_count: 0,
                modalities: vec![],
            });
        }
        let corrected = match i % 13 {
            1 => Some(Some("20231231".to_string())),
            7 => Some(None),
            _ if date_of(i).is_none() && i % 2 == 0 => Some(Some("20240115".to_string())),
            _ => None,
        };
        if let Some(date) = corrected {
            push(StudyEvent::StudyMetadataCorrected {
                study_uid,
                changes: BTreeMap::from([("StudyDate".to_string(), date)]),
                reason: "wrong date".into(),
            });
        }
    }
    out
}

/// A second institution in an alliance with another: for the viewer with more than one way
/// of seeing studies, which must not take the shortcut.
fn setup() -> Vec<(String, HubEvent)> {
    vec![
        (
            "hub".into(),
            InstitutionEvent::InstitutionRegistered {
                institution_id: OWNER.into(),
                name: "Deep".into(),
                kind: InstitutionKind::Hospital,
                ae_titles: vec![],
            }
            .into(),
        ),
        (
            "hub".into(),
            AllianceEvent::AllianceRegistered {
                alliance_id: "all-1".into(),
                name: "Alliance".into(),
                lead_institution: "hosp-other".into(),
            }
            .into(),
        ),
        (
            "hub".into(),
            AllianceEvent::InstitutionJoinedAlliance {
                alliance_id: "all-1".into(),
                institution_id: OWNER.into(),
            }
            .into(),
        ),
    ]
}

async fn project(db: &ReadModelDb) {
    let projections: [&dyn Projection; 2] = [&StudyCatalog, &AccessIndex];
    let mut tx = db.begin_write().await.expect("transaction");
    for projection in projections {
        projection.drop_tables(&mut tx).await.expect("drop tables");
        projection.create(&mut tx).await.expect("tables");
    }
    for (n, (tenant, event)) in setup().iter().chain(events().iter()).enumerate() {
        let record = record(n as u64 + 1, tenant, event);
        for projection in projections {
            projection
                .apply(&mut tx, &record, event)
                .await
                .expect("the projection applies the event");
        }
    }
    tx.commit().await.expect("commit");
}

fn viewer(relations: Vec<Relation>) -> Viewer {
    Viewer {
        subject: "admin-1".into(),
        institution: OWNER.into(),
        relations,
        now_micros: Utc::now().timestamp_micros(),
        consult_lead_micros: 0,
    }
}

async fn page(db: &ReadModelDb, viewer: &Viewer, offset: u32, limit: u32) -> (Vec<String>, bool) {
    let query = StudyQuery {
        limit,
        offset,
        ..StudyQuery::default()
    };
    let (rows, more) = StudyCatalog::search(db.pool(), viewer, &query)
        .await
        .expect("search");
    (rows.into_iter().map(|r| r.study_uid).collect(), more)
}

/// Every deep page equals the same slice of the whole list, read from offset 0 in pages below
/// `DEEP_OFFSET` (the plain query): across day boundaries, at the end of the dated studies and
/// past the end.
async fn check(db: &ReadModelDb, backend: &str) {
    let own = viewer(vec![Relation::Own]);
    // The reference: one page from offset 0, which the plain query answers.
    let (all, more) = page(db, &own, 0, 100_000).await;
    assert!(!more);
    assert!(
        all.len() > DEEP_OFFSET as usize + 600,
        "{backend}: {} studies visible, too few for deep pages",
        all.len()
    );
    let total = all.len() as u32;
    let mut offsets: Vec<u32> = (DEEP_OFFSET..total + 5).step_by(37).collect();
    offsets.extend([
        total - 101,
        total - 100,
        total - 99,
        total - 1,
        total,
        total + 1,
    ]);
    for offset in offsets {
        for limit in [1, 10, 100] {
            let (rows, more) = page(db, &own, offset, limit).await;
            let start = (offset as usize).min(all.len());
            let end = (start + limit as usize).min(all.len());
            assert_eq!(
                rows,
                all[start..end].to_vec(),
                "{backend}: offset {offset}, limit {limit}"
            );
            assert_eq!(more, end < all.len(), "{backend}: more at {offset}/{limit}");
        }
    }
    // A viewer with more than one way of seeing studies takes the plain path. Through the
    // alliance (nothing consented here, so the same studies) and through `Any` (every
    // institution's, so a page placed by this institution's day counts would be wrong).
    for (relations, more_than_own) in [
        (vec![Relation::Own, Relation::Alliance], false),
        (vec![Relation::Own, Relation::Any], true),
    ] {
        let wider = viewer(relations);
        let (all_wide, _) = page(db, &wider, 0, 100_000).await;
        assert_eq!(all_wide.len() > all.len(), more_than_own, "{backend}");
        for offset in [DEEP_OFFSET, DEEP_OFFSET + 333] {
            let (rows, _) = page(db, &wider, offset, 50).await;
            let start = (offset as usize).min(all_wide.len());
            let end = (start + 50).min(all_wide.len());
            assert_eq!(rows, all_wide[start..end].to_vec(), "{backend}: {wider:?}");
        }
    }
}

/// The day counts equal a count of the catalog's rows, and studies stabilized after their purge
/// stay purged.
async fn counts_match_rows(db: &ReadModelDb, backend: &str) {
    counts_match_rows_so_far(db, backend).await;
    // Stabilized after their purge: still purged.
    let late: Vec<String> = (0..STUDIES).filter(|i| i % 33 == 2).map(uid).collect();
    assert!(!late.is_empty());
    for study in late {
        let status: String =
            sqlx::query_scalar("SELECT status FROM study_catalog WHERE study_uid = $1")
                .bind(&study)
                .fetch_one(db.pool())
                .await
                .expect("status");
        assert_eq!(status, "purged", "{backend}: {study}");
    }
}

async fn deep_pages(db: ReadModelDb, backend: &str) {
    project(&db).await;
    counts_match_rows(&db, backend).await;
    check(&db, backend).await;
    // A catalog from before the day counts: the table appears, filled from the rows.
    let mut tx = db.begin_write().await.expect("transaction");
    sqlx::query("DROP TABLE study_catalog_days")
        .execute(&mut *tx)
        .await
        .expect("drop");
    StudyCatalog.create(&mut tx).await.expect("create");
    tx.commit().await.expect("commit");
    counts_match_rows(&db, backend).await;
    check(&db, backend).await;
}

#[tokio::test]
async fn deep_pages_equal_the_plain_query_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ReadModelDb::open(&dir.path().join("read.sqlite"))
        .await
        .expect("db");
    deep_pages(db, "SQLite").await;
}

#[tokio::test]
async fn deep_pages_equal_the_plain_query_on_postgresql() {
    let url = pg_support::fresh_database("deep_pages").await;
    let db = ReadModelDb::connect(&url).await.expect("PostgreSQL");
    deep_pages(db, "PostgreSQL").await;
}

/// Deep pages are placed by day counts kept between searches while the catalog's checkpoint
/// stays where it was: once the catalog applies more events (purges, StudyDate corrections),
/// the next deep page is placed by the new counts.
#[tokio::test]
async fn deep_pages_follow_the_catalog_as_its_checkpoint_moves() {
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
    let db = ReadModelDb::open(&dir.path().join("read.sqlite"))
        .await
        .expect("db");
    let runners: Vec<ProjectionRunner> = [
        Arc::new(StudyCatalog) as Arc<dyn Projection>,
        Arc::new(AccessIndex),
    ]
    .into_iter()
    .map(|p| {
        ProjectionRunner::new(
            store.clone(),
            db.clone(),
            p,
            ProjectionMetrics::unregistered(),
        )
    })
    .collect();
    let records: Vec<RecordedEvent> = setup()
        .iter()
        .chain(events().iter())
        .enumerate()
        .map(|(n, (tenant, event))| record(n as u64 + 1, tenant, event))
        .collect();
    // Every registration first, then the stabilizations, purges and corrections.
    let registered = setup().len() + STUDIES;
    for batch in [&records[..registered], &records[registered..]] {
        for runner in &runners {
            runner.prepare().await.expect("prepare");
            runner.apply_batch(batch).await.expect("apply");
        }
        counts_match_rows_so_far(&db, "SQLite").await;
        check(&db, "SQLite, through a runner").await;
    }
}

/// The day counts equal a count of the catalog's rows, whatever has been applied so far.
async fn counts_match_rows_so_far(db: &ReadModelDb, backend: &str) {
    let counted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT institution, study_date, studies FROM study_catalog_days
         WHERE studies > 0 ORDER BY institution, study_date",
    )
    .fetch_all(db.pool())
    .await
    .expect("days");
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT institution, study_date, COUNT(*) FROM study_catalog
         WHERE study_date IS NOT NULL AND status <> 'purged'
         GROUP BY institution, study_date ORDER BY institution, study_date",
    )
    .fetch_all(db.pool())
    .await
    .expect("rows");
    assert_eq!(counted, rows, "{backend}: day counts");
}
