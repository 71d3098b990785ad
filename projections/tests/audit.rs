//! The audit trail: its own SQLite file beside the read models, so the write every search
//! causes leaves the catalog's readers their page cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;

use hub_events::catalog::{AccessAction, AccessEvent, AccessedStudy, Decision, PurposeOfUse};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, SqliteEventStore, SqliteSync,
    StoreMetrics, StreamId,
};
use hub_projections::{
    AUDIT_GATHER, AccessIndex, AuditTrail, ProjectionMetrics, ProjectionRunner, ReadModelDb,
    StudyCatalog, audit_file, create_tables, rebuild,
};

fn query(subject: &str, studies: &[&str]) -> HubEvent {
    HubEvent::from(AccessEvent::DataAccessed {
        subject: subject.into(),
        role: "radiologist".into(),
        institution: "hosp-a".into(),
        action: AccessAction::Query,
        study_uid: None,
        series_uid: None,
        sop_instance_uid: None,
        purpose: PurposeOfUse::Treatment,
        decision: Decision::Permit,
        reason: None,
        owner: None,
        results: studies
            .iter()
            .map(|s| AccessedStudy {
                owner: "hosp-a".into(),
                study_uid: (*s).into(),
            })
            .collect(),
        expires_at: None,
    })
}

/// An event log in `dir`.
async fn event_log(dir: &std::path::Path) -> Arc<dyn EventStore> {
    Arc::new(
        SqliteEventStore::open(
            &dir.join("events.sqlite"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await
        .expect("store"),
    )
}

/// dr-a's search listed studies 1.1 and 1.2, then dr-b's 1.2: the head after them.
async fn two_searches(store: &Arc<dyn EventStore>) -> u64 {
    let meta = EventMetadata::new("hosp-a", "user:dr-a");
    for (subject, studies) in [("dr-a", vec!["1.1", "1.2"]), ("dr-b", vec!["1.2"])] {
        store
            .append(
                &StreamId::new(Family::Access, "queries"),
                ExpectedVersion::Any,
                vec![query(subject, &studies).to_new_event(meta.clone())],
            )
            .await
            .expect("append");
    }
    store.head().await.expect("head")
}

/// Runs `statements` on the SQLite file at `path` (created if missing), as an earlier version
/// would have left it.
async fn in_old_layout(path: &std::path::Path, statements: &[&str]) {
    let mut old = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("old file");
    for sql in statements {
        sqlx::query(sql)
            .execute(&mut old)
            .await
            .expect("old layout");
    }
    old.close().await.expect("close");
}

/// Only comparable within one connection.
async fn data_version(conn: &mut sqlx::SqliteConnection) -> i64 {
    sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await
        .expect("data_version")
}

#[tokio::test]
async fn the_audit_trail_lives_in_its_own_file_and_searches_leave_the_catalog_file_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = event_log(dir.path()).await;
    let path = dir.path().join("readmodels.sqlite");
    assert_eq!(
        audit_file(&path),
        dir.path().join("readmodels-audit.sqlite")
    );
    let db = ReadModelDb::open(&path).await.expect("db");
    for p in [
        &StudyCatalog as &dyn hub_projections::Projection,
        &AuditTrail,
    ] {
        create_tables(&db, p).await.expect("tables");
    }
    // Observers on each file, apart from the pools under test.
    let models = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("models file");
    let audit = sqlx::SqlitePool::connect(&format!("sqlite://{}", audit_file(&path).display()))
        .await
        .expect("audit file");
    let tables = |pool: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%_trail'",
        )
        .fetch_all(&pool)
        .await
        .expect("tables")
    };
    assert_eq!(tables(models.clone()).await, Vec::<String>::new());
    assert_eq!(tables(audit.clone()).await, vec!["audit_trail".to_string()]);

    let head = two_searches(&store).await;
    let events = store.read_all(0, 100).await.expect("read");
    let mut observer = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("observer");
    let before = data_version(&mut observer).await;
    for projection in [
        Arc::new(AuditTrail) as Arc<dyn hub_projections::Projection>,
        Arc::new(StudyCatalog),
    ] {
        let runner = ProjectionRunner::new(
            store.clone(),
            db.clone(),
            projection,
            ProjectionMetrics::unregistered(),
        );
        runner.prepare().await.expect("prepare");
        assert_eq!(runner.apply_batch(&events).await.expect("apply"), head);
    }
    assert_eq!(
        data_version(&mut observer).await,
        before,
        "nothing was committed to the read models' file"
    );
    let rows = AuditTrail::for_study(&db, "hosp-a", "1.2", 10, 0)
        .await
        .expect("audit rows");
    let who: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(who, ["dr-a", "dr-b"]);
    // The audit trail's checkpoint is in its file, and read with the others'.
    let (in_audit,): (i64,) = sqlx::query_as(
        "SELECT position FROM projection_checkpoints WHERE projection = 'audit_trail'",
    )
    .fetch_one(&audit)
    .await
    .expect("audit checkpoint");
    assert_eq!(in_audit as u64, head);
    assert_eq!(
        db.checkpoints(&["audit_trail", "study_catalog"])
            .await
            .expect("checkpoints"),
        vec![head, 0],
        "the catalog wanted nothing: its position is not stored yet"
    );

    // A rebuild drops and refills the audit trail in its own file.
    let reached = rebuild(
        store.clone(),
        db.clone(),
        Arc::new(AuditTrail),
        ProjectionMetrics::unregistered(),
        |_| {},
    )
    .await
    .expect("rebuild");
    assert_eq!(reached, head);
    assert_eq!(
        AuditTrail::for_study(&db, "hosp-a", "1.2", 10, 0)
            .await
            .expect("audit rows"),
        rows
    );
    assert_eq!(tables(models).await, Vec::<String>::new());
}

/// A read-model file from before the audit trail had its own: the old copy and its checkpoint
/// are dropped when it is opened, so the checkpoints read are the audit file's.
#[tokio::test]
async fn an_audit_trail_left_in_the_read_models_file_is_dropped_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("readmodels.sqlite");
    in_old_layout(
        &path,
        &[
            "CREATE TABLE projection_checkpoints (projection TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            "INSERT INTO projection_checkpoints VALUES ('audit_trail', 500), ('study_catalog', 500)",
            "CREATE TABLE audit_trail (position BIGINT NOT NULL)",
            "INSERT INTO audit_trail VALUES (7)",
        ],
    )
    .await;
    let db = ReadModelDb::open(&path).await.expect("db");
    assert_eq!(
        db.checkpoints(&["audit_trail", "study_catalog"])
            .await
            .expect("checkpoints"),
        vec![0, 500],
        "the audit trail starts over in its own file; the catalog keeps its position"
    );
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_trail'",
    )
    .fetch_all(db.pool())
    .await
    .expect("tables");
    assert!(left.is_empty(), "{left:?}");
}

/// A query that listed more studies than one insert statement holds leaves one row per study
/// it listed, each with the event's fields, however the rows were split between statements;
/// a study listed twice, or both as the event's own study and among its results, leaves one.
#[tokio::test]
async fn a_query_listing_many_studies_leaves_one_row_per_study() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = event_log(dir.path()).await;
    let db = ReadModelDb::open(&dir.path().join("readmodels.sqlite"))
        .await
        .expect("db");
    create_tables(&db, &AuditTrail).await.expect("tables");
    // 600 studies (three statements' worth at any split from 200 to 299), one of them listed
    // twice.
    let uids: Vec<String> = (0..600).map(|i| format!("1.2.3.{i}")).collect();
    let mut listed: Vec<&str> = uids.iter().map(String::as_str).collect();
    listed.push("1.2.3.77");
    let mut wide = query("dr-wide", &listed);
    if let HubEvent::Access(AccessEvent::DataAccessed {
        owner, study_uid, ..
    }) = &mut wide
    {
        *owner = Some("hosp-a".into());
        *study_uid = Some("1.2.3.0".into());
    }
    let meta = EventMetadata::new("hosp-a", "user:dr-wide");
    for event in [wide, query("dr-next", &["1.2.3.599"])] {
        store
            .append(
                &StreamId::new(Family::Access, "queries"),
                ExpectedVersion::Any,
                vec![event.to_new_event(meta.clone())],
            )
            .await
            .expect("append");
    }
    let events = store.read_all(0, 100).await.expect("read");
    let runner = ProjectionRunner::new(
        store.clone(),
        db.clone(),
        Arc::new(AuditTrail),
        ProjectionMetrics::unregistered(),
    );
    runner.prepare().await.expect("prepare");
    runner.apply_batch(&events).await.expect("apply");

    let audit = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        audit_file(&dir.path().join("readmodels.sqlite")).display()
    ))
    .await
    .expect("audit file");
    let (rows, studies): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT t.study_uid) FROM audit_trail t
         JOIN audit_events e ON e.position = t.position WHERE e.subject = 'dr-wide'",
    )
    .fetch_one(&audit)
    .await
    .expect("count");
    assert_eq!((rows, studies), (600, 600));
    for uid in &uids {
        let trail = AuditTrail::for_study(&db, "hosp-a", uid, 10, 0)
            .await
            .expect("audit rows");
        let who: Vec<(&str, &str, &str, &str)> = trail
            .iter()
            .map(|r| {
                (
                    r.subject.as_str(),
                    r.action.as_str(),
                    r.decision.as_str(),
                    r.owner.as_str(),
                )
            })
            .collect();
        let mut expected = vec![("dr-wide", "query", "permit", "hosp-a")];
        if uid == "1.2.3.599" {
            expected.push(("dr-next", "query", "permit", "hosp-a"));
        }
        assert_eq!(who, expected, "study {uid}");
        assert_eq!(trail[0].position as u64, events[0].position, "study {uid}");
    }
}

/// A live audit trail gathers the events appended within [`AUDIT_GATHER`] of the first and
/// applies them in one commit: searches one after the other (each appends an event) are seen
/// all at once, never one by one; what was gathered when the runner is stopped is applied.
#[tokio::test]
async fn a_live_audit_trail_applies_the_events_of_a_gathering_window_in_one_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = event_log(dir.path()).await;
    let path = dir.path().join("readmodels.sqlite");
    let db = ReadModelDb::open(&path).await.expect("db");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = ProjectionRunner::new(
        store.clone(),
        db.clone(),
        Arc::new(AuditTrail),
        ProjectionMetrics::unregistered(),
    );
    let running = tokio::spawn(runner.run(stopped));
    let audit = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=rwc",
        audit_file(&path).display()
    ))
    .await
    .expect("audit file");
    // The table exists once the runner prepared it.
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_trail")
            .fetch_one(&audit)
            .await
            .unwrap_or(-1)
    };
    while rows().await < 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let meta = EventMetadata::new("hosp-a", "user:dr-a");
    let search = |n: usize| {
        let studies = [format!("1.9.{n}")];
        let studies: Vec<&str> = studies.iter().map(String::as_str).collect();
        vec![query("dr-a", &studies).to_new_event(meta.clone())]
    };
    let first = Instant::now();
    let mut seen = Vec::new();
    for n in 0..5 {
        store
            .append(
                &StreamId::new(Family::Access, "queries"),
                ExpectedVersion::Any,
                search(n),
            )
            .await
            .expect("append");
        // Without gathering, each event is applied within a few milliseconds of its append.
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.push(rows().await);
    }
    assert!(
        first.elapsed() < AUDIT_GATHER,
        "the appends took longer than the window; the test cannot tell"
    );
    let deadline = Instant::now() + AUDIT_GATHER * 5;
    while rows().await < 5 {
        assert!(
            Instant::now() < deadline,
            "the gathered events were not applied"
        );
        seen.push(rows().await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        first.elapsed() >= AUDIT_GATHER,
        "applied before the window closed: {:?}",
        first.elapsed()
    );
    assert!(
        seen.iter().all(|&n| n == 0),
        "the rows were applied one search at a time: {seen:?}"
    );

    // Stopped while gathering: what was gathered is applied (and its position stored) first.
    store
        .append(
            &StreamId::new(Family::Access, "queries"),
            ExpectedVersion::Any,
            search(5),
        )
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(true).expect("stop");
    tokio::time::timeout(AUDIT_GATHER, running)
        .await
        .expect("the runner stops without waiting out the window")
        .expect("join")
        .expect("run");
    assert_eq!(rows().await, 6);
    assert_eq!(
        db.checkpoints(&["audit_trail"]).await.expect("checkpoints"),
        vec![store.head().await.expect("head")]
    );
}

/// An audit trail in the layout of one row per study with every field of its event, with a
/// checkpoint from before projections had versions (so stored as version 1): the audit trail
/// is at version 2, so the runner drops it when the projection starts, with its checkpoint and
/// dead letters, and the log is replayed into the new layout, which answers "who saw this
/// study" with the same rows.
#[tokio::test]
async fn an_audit_trail_in_the_one_row_per_study_layout_is_replayed_into_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = event_log(dir.path()).await;
    let path = dir.path().join("readmodels.sqlite");
    let head = two_searches(&store).await;
    in_old_layout(
        &audit_file(&path),
        &[
            "CREATE TABLE projection_checkpoints (projection TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            "CREATE TABLE projection_dead_letters (projection TEXT NOT NULL, position BIGINT NOT NULL)",
            "INSERT INTO projection_checkpoints VALUES ('audit_trail', 2)",
            "INSERT INTO projection_dead_letters VALUES ('audit_trail', 1)",
            "CREATE TABLE audit_trail (position BIGINT NOT NULL, owner TEXT NOT NULL,
                 study_uid TEXT NOT NULL, series_uid TEXT, sop_instance_uid TEXT,
                 subject TEXT NOT NULL, role TEXT NOT NULL, institution TEXT NOT NULL,
                 action TEXT NOT NULL, purpose TEXT NOT NULL, decision TEXT NOT NULL,
                 reason TEXT, at TEXT NOT NULL, PRIMARY KEY (owner, study_uid, position))",
            "INSERT INTO audit_trail VALUES (1, 'hosp-a', '1.2', NULL, NULL, 'dr-a', 'radiologist',
                 'hosp-a', 'query', 'treatment', 'permit', NULL, '2026-01-01T00:00:00+00:00')",
        ],
    )
    .await;
    let db = ReadModelDb::open(&path).await.expect("db");
    let runner = ProjectionRunner::new(
        store.clone(),
        db.clone(),
        Arc::new(AuditTrail),
        ProjectionMetrics::unregistered(),
    );
    assert_eq!(
        runner.prepare().await.expect("prepare"),
        0,
        "the old layout's position is dropped with it"
    );
    let audit = sqlx::SqlitePool::connect(&format!("sqlite://{}", audit_file(&path).display()))
        .await
        .expect("audit file");
    let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projection_dead_letters")
        .fetch_one(&audit)
        .await
        .expect("dead letters");
    assert_eq!(dead, 0);
    let version: i64 = sqlx::query_scalar(
        "SELECT version FROM projection_checkpoints WHERE projection = 'audit_trail'",
    )
    .fetch_one(&audit)
    .await
    .expect("version");
    assert_eq!(version, 2);
    let events = store.read_all(0, 100).await.expect("read");
    assert_eq!(runner.apply_batch(&events).await.expect("apply"), head);
    let rows = AuditTrail::for_study(&db, "hosp-a", "1.2", 10, 0)
        .await
        .expect("audit rows");
    let who: Vec<(i64, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.position,
                r.subject.as_str(),
                r.action.as_str(),
                r.study_uid.as_str(),
            )
        })
        .collect();
    assert_eq!(
        who,
        [(1, "dr-a", "query", "1.2"), (2, "dr-b", "query", "1.2")]
    );
    // Opened again, the new layout is kept.
    let again = ProjectionRunner::new(
        store.clone(),
        db.clone(),
        Arc::new(AuditTrail),
        ProjectionMetrics::unregistered(),
    );
    assert_eq!(again.prepare().await.expect("prepare"), head);
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_trail")
        .fetch_one(&audit)
        .await
        .expect("keys");
    assert_eq!(keys, 3);
}

/// The access index across an upgrade: an index of version 1 (before issue 24: user grants and
/// break-the-glass sessions keyed by a bare subject, consents of any policy from anyone, consult
/// windows without the owner's approval) is dropped with its checkpoint when the projection
/// starts, and the log replayed into version 2.
#[tokio::test]
async fn an_access_index_keyed_by_bare_subjects_is_replayed_into_the_new_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = event_log(dir.path()).await;
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    let glass = AccessEvent::DataAccessed {
        subject: "bob".into(),
        role: "physician".into(),
        institution: "h3".into(),
        action: AccessAction::BreakTheGlass,
        study_uid: Some("1.2.3".into()),
        series_uid: None,
        sop_instance_uid: None,
        purpose: PurposeOfUse::Emergency,
        decision: Decision::Permit,
        reason: Some("unconscious patient in the ER".into()),
        owner: Some("h1".into()),
        results: vec![],
        expires_at: Some(until),
    };
    store
        .append(
            &StreamId::new(Family::Access, "1.2.3"),
            ExpectedVersion::Any,
            vec![glass.to_new_event(EventMetadata::new("h3", "user:bob"))],
        )
        .await
        .expect("append");
    let path = dir.path().join("readmodels.sqlite");
    in_old_layout(
        &path,
        &[
        "CREATE TABLE projection_checkpoints (projection TEXT PRIMARY KEY, position BIGINT NOT NULL)",
        "INSERT INTO projection_checkpoints VALUES ('access_index', 1)",
        "CREATE TABLE access_consents (consent_id TEXT PRIMARY KEY, regional_patient_id TEXT NOT NULL,
             institution_id TEXT NOT NULL, policy TEXT NOT NULL, active BIGINT NOT NULL)",
        "INSERT INTO access_consents VALUES ('c1', 'RP-1', 'h3', 'no', 1)",
        "CREATE TABLE access_break_glass (subject TEXT NOT NULL, owner TEXT NOT NULL,
             study_uid TEXT NOT NULL, until BIGINT NOT NULL, reason TEXT NOT NULL,
             PRIMARY KEY (subject, owner, study_uid))",
        "INSERT INTO access_break_glass VALUES ('bob', 'h1', '1.2.3', 9999999999999999, 'x')",
        ],
    )
    .await;

    let db = ReadModelDb::open(&path).await.expect("db");
    let runner = ProjectionRunner::new(
        store.clone(),
        db.clone(),
        Arc::new(AccessIndex),
        ProjectionMetrics::unregistered(),
    );
    assert_eq!(
        runner.prepare().await.expect("prepare"),
        0,
        "the old layout's position is dropped with it"
    );
    let events = store.read_all(0, 10).await.expect("read");
    runner.apply_batch(&events).await.expect("apply");
    let consents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_consents")
        .fetch_one(db.pool())
        .await
        .expect("consents");
    assert_eq!(
        consents, 0,
        "the stranger's consent row went with the old layout"
    );
    let sessions: Vec<String> = sqlx::query_scalar("SELECT subject FROM access_break_glass")
        .fetch_all(db.pool())
        .await
        .expect("sessions");
    assert_eq!(
        sessions,
        vec![hub_projections::access::user_key("h3", "bob")],
        "the session is bob@h3's, replayed from the log"
    );
}
