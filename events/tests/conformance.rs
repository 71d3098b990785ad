//! One conformance suite for every event store implementation: each case runs against SQLite and
//! against PostgreSQL (a fresh database per test, on the server `tests/run.sh` starts).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hub_events::catalog::StudyEvent;
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, NewEvent, PostgresEventStore,
    SqliteEventStore, SqliteSync, StoreError, StoreMetrics, StreamId, Subscription,
};
use uuid::Uuid;

/// Keeps whatever backs a store alive for the duration of a test.
enum Backing {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Postgres,
}

async fn sqlite() -> (Arc<dyn EventStore>, Backing) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteEventStore::open(
        &dir.path().join("events.sqlite"),
        SqliteSync::Normal,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("open sqlite store");
    (Arc::new(store), Backing::Dir(dir))
}

/// A fresh database on the test server, returned as a URL.
async fn fresh_postgres_database() -> String {
    let admin = std::env::var("HUB_TEST_POSTGRES_URL").expect(
        "HUB_TEST_POSTGRES_URL is not set: run the suite with tests/run.sh, which starts a \
         throwaway PostgreSQL and sets it",
    );
    let name = format!("t_{}", Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("connect to test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    match admin.rfind('/') {
        Some(i) => format!("{}/{}", &admin[..i], name),
        None => panic!("HUB_TEST_POSTGRES_URL has no database part: {admin}"),
    }
}

async fn postgres() -> (Arc<dyn EventStore>, Backing) {
    let url = fresh_postgres_database().await;
    let store = PostgresEventStore::connect(&url, 16, true, StoreMetrics::unregistered())
        .await
        .expect("connect postgres store");
    (Arc::new(store), Backing::Postgres)
}

fn study_event(study: &str, n: u32) -> NewEvent {
    HubEvent::from(StudyEvent::StudyStabilized {
        study_uid: study.to_owned(),
        series_count: 1,
        instance_count: n,
        modalities: vec!["CT".into()],
    })
    .to_new_event(EventMetadata::new("hosp-a", "service:test"))
}

fn stream(i: impl std::fmt::Display) -> StreamId {
    StreamId::new(Family::Study, format!("1.2.826.0.1.{i}"))
}

// ---- the cases -------------------------------------------------------------------------------

async fn a_conflicting_append_names_both_versions_and_changes_nothing(store: Arc<dyn EventStore>) {
    let s = stream(1);
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![study_event("1", 1), study_event("1", 2)],
        )
        .await
        .expect("first append");
    let before = store.read_stream(&s, 1, 100).await.expect("read");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
    ] {
        let err = store
            .append(&s, expected, vec![study_event("1", 3)])
            .await
            .expect_err("conflict");
        match &err {
            StoreError::Conflict {
                expected: e,
                actual,
                stream,
            } => {
                assert_eq!((*e, *actual, stream), (expected, 2, &s));
            }
            other => panic!("expected a conflict, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("actual version 2"), "{message}");
    }
    assert_eq!(store.read_stream(&s, 1, 100).await.expect("read"), before);
    assert_eq!(store.head().await.expect("head"), 2);
    let ok = store
        .append(&s, ExpectedVersion::Exact(2), vec![study_event("1", 3)])
        .await
        .expect("append at the right version");
    assert_eq!((ok.first_position, ok.stream_version), (3, 3));
    let empty = store.append(&s, ExpectedVersion::Any, vec![]).await;
    assert!(matches!(empty, Err(StoreError::EmptyAppend(_))));
}

async fn concurrent_writers_lose_nothing_and_keep_versions_contiguous(store: Arc<dyn EventStore>) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 60;
    let shared = stream("shared");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let own = stream(format!("own.{w}"));
            let mut ids = Vec::new();
            for i in 0..PER_WRITER {
                // Own stream: exact expected versions, never conflicts.
                let e = study_event(&w.to_string(), i as u32);
                ids.push(e.event_id);
                store
                    .append(&own, ExpectedVersion::Exact(i as u64), vec![e])
                    .await
                    .expect("append own stream");
                // Shared stream: read the version, append at it, retry on conflict.
                let e = study_event("shared", i as u32);
                ids.push(e.event_id);
                loop {
                    let version = store
                        .read_stream(&shared, 1, usize::MAX >> 1)
                        .await
                        .expect("read shared")
                        .last()
                        .map_or(0, |e| e.stream_version);
                    match store
                        .append(&shared, ExpectedVersion::Exact(version), vec![e.clone()])
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(other) => panic!("append shared: {other}"),
                    }
                }
            }
            ids
        }));
    }
    let mut appended = HashSet::new();
    for t in tasks {
        appended.extend(t.await.expect("writer"));
    }
    let total = WRITERS * PER_WRITER * 2;
    let all = store.read_all(0, total + 10).await.expect("read all");
    assert_eq!(all.len(), total, "nothing lost, nothing duplicated");
    let stored: HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(stored, appended);
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=total as u64).collect::<Vec<_>>(),
        "positions contiguous"
    );
    let mut versions: BTreeMap<&StreamId, Vec<u64>> = BTreeMap::new();
    for e in &all {
        versions
            .entry(&e.stream_id)
            .or_default()
            .push(e.stream_version);
    }
    assert_eq!(versions.len(), WRITERS + 1);
    for (s, v) in versions {
        let n = v.len() as u64;
        assert_eq!(
            v,
            (1..=n).collect::<Vec<_>>(),
            "versions of {s} contiguous and in order"
        );
    }
}

async fn a_catch_up_subscriber_sees_10000_concurrent_appends_once_in_order(
    store: Arc<dyn EventStore>,
    subscriber_store: Arc<dyn EventStore>,
) {
    const TASKS: usize = 8;
    /// Appended concurrently by the writer tasks; 50 more come before and 50 after.
    const TOTAL: usize = 10_000;
    const PER_TASK: usize = TOTAL / TASKS;
    // Some events exist before the subscriber starts: it must catch up, then go live.
    for i in 0..50 {
        store
            .append(
                &stream(format!("pre.{i}")),
                ExpectedVersion::NoStream,
                vec![study_event("p", 0)],
            )
            .await
            .expect("pre-append");
    }
    let subscriber = tokio::spawn(async move {
        let mut sub = Subscription::new(subscriber_store, 0);
        let mut seen = Vec::with_capacity(TOTAL + 100);
        while seen.len() < TOTAL + 100 {
            let batch = tokio::time::timeout(Duration::from_secs(60), sub.next_batch(333))
                .await
                .expect("subscriber stalled: an event was skipped or never announced")
                .expect("next batch");
            assert!(!batch.is_empty());
            seen.extend(batch);
        }
        seen
    });
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut written = 0;
            let mut round = 0;
            while written < PER_TASK {
                // Mix single appends and small batches, each to its own stream.
                let n = (round % 4) + 1;
                let n = n.min(PER_TASK - written);
                let events: Vec<NewEvent> = (0..n).map(|i| study_event("c", i as u32)).collect();
                ids.extend(events.iter().map(|e| e.event_id));
                store
                    .append(
                        &stream(format!("c.{t}.{round}")),
                        ExpectedVersion::NoStream,
                        events,
                    )
                    .await
                    .expect("concurrent append");
                written += n;
                round += 1;
            }
            ids
        }));
    }
    let mut appended = HashSet::new();
    for w in writers {
        appended.extend(w.await.expect("writer"));
    }
    // The remaining 50 after the concurrent burst, so the subscriber also sees a live tail.
    for i in 0..50 {
        let e = study_event("tail", i);
        appended.insert(e.event_id);
        store
            .append(
                &stream(format!("tail.{i}")),
                ExpectedVersion::NoStream,
                vec![e],
            )
            .await
            .expect("tail append");
    }
    let seen = subscriber.await.expect("subscriber");
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=(TOTAL + 100) as u64).collect::<Vec<_>>(),
        "every position exactly once, in order, no gap"
    );
    let ids: HashSet<Uuid> = seen.iter().skip(50).map(|e| e.event_id).collect();
    // What was delivered (pushed or read) equals what is stored, byte for byte.
    let stored = store.read_all(0, TOTAL + 100).await.expect("read all");
    assert!(
        stored == seen,
        "delivered events differ from the stored ones"
    );
    assert_eq!(ids.len(), TOTAL + 50);
    assert_eq!(ids, appended);
}

async fn a_restarted_subscriber_resumes_exactly_at_its_checkpoint(store: Arc<dyn EventStore>) {
    for i in 0..100 {
        store
            .append(
                &stream(i),
                ExpectedVersion::NoStream,
                vec![study_event("r", i)],
            )
            .await
            .expect("append");
    }
    let mut first = Subscription::new(store.clone(), 0);
    let mut seen = Vec::new();
    while seen.len() < 37 {
        let batch = first.next_batch(37 - seen.len()).await.expect("batch");
        seen.extend(batch.into_iter().map(|e| e.position));
    }
    let checkpoint = first.position();
    assert_eq!(checkpoint, 37);
    drop(first);
    for i in 100..120 {
        store
            .append(
                &stream(i),
                ExpectedVersion::NoStream,
                vec![study_event("r", i)],
            )
            .await
            .expect("append");
    }
    let mut resumed = Subscription::new(store.clone(), checkpoint);
    while seen.len() < 120 {
        let batch = tokio::time::timeout(Duration::from_secs(10), resumed.next_batch(50))
            .await
            .expect("resumed subscriber stalled")
            .expect("batch");
        seen.extend(batch.into_iter().map(|e| e.position));
    }
    assert_eq!(seen, (1..=120).collect::<Vec<_>>());
}

async fn reading_a_stream_and_the_log_returns_what_was_appended(store: Arc<dyn EventStore>) {
    let a = stream("a");
    let b = stream("b");
    let mut cause = None;
    for i in 0..5 {
        let mut e = study_event("a", i);
        e.metadata.causation_id = cause;
        cause = Some(e.event_id);
        store
            .append(&a, ExpectedVersion::Any, vec![e.clone()])
            .await
            .expect("append a");
        store
            .append(&b, ExpectedVersion::Any, vec![study_event("b", i)])
            .await
            .expect("append b");
    }
    let tail = store.read_stream(&a, 3, 10).await.expect("read stream");
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(tail.iter().all(|e| e.stream_id == a));
    assert_eq!(tail[2].metadata.causation_id, Some(tail[1].event_id));
    let page = store.read_all(4, 3).await.expect("read all");
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    let decoded = HubEvent::decode(&page[0]).expect("decode");
    assert!(matches!(
        decoded,
        HubEvent::Study(StudyEvent::StudyStabilized { .. })
    ));
    assert!(
        store
            .read_stream(&stream("none"), 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
}

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_conflicting_append_names_both_versions_and_changes_nothing() {
                let (store, _b) = super::$backend().await;
                super::a_conflicting_append_names_both_versions_and_changes_nothing(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_lose_nothing_and_keep_versions_contiguous() {
                let (store, _b) = super::$backend().await;
                super::concurrent_writers_lose_nothing_and_keep_versions_contiguous(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_restarted_subscriber_resumes_exactly_at_its_checkpoint() {
                let (store, _b) = super::$backend().await;
                super::a_restarted_subscriber_resumes_exactly_at_its_checkpoint(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn reading_a_stream_and_the_log_returns_what_was_appended() {
                let (store, _b) = super::$backend().await;
                super::reading_a_stream_and_the_log_returns_what_was_appended(store).await;
            }
        }
    };
}

conformance!(sqlite);
conformance!(postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_catch_up_subscriber_sees_10000_concurrent_appends_once_in_order() {
    let (store, _b) = sqlite().await;
    a_catch_up_subscriber_sees_10000_concurrent_appends_once_in_order(store.clone(), store).await;
}

/// On PostgreSQL the subscriber runs on a second store instance (its own pool), so it learns of
/// appends only through the database (NOTIFY and reads), as another process would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_catch_up_subscriber_sees_10000_concurrent_appends_once_in_order() {
    let url = fresh_postgres_database().await;
    let writer = PostgresEventStore::connect(&url, 16, false, StoreMetrics::unregistered())
        .await
        .expect("writer store");
    let reader = PostgresEventStore::connect(&url, 4, true, StoreMetrics::unregistered())
        .await
        .expect("reader store");
    a_catch_up_subscriber_sees_10000_concurrent_appends_once_in_order(
        Arc::new(writer),
        Arc::new(reader),
    )
    .await;
}

#[tokio::test]
async fn a_corrupt_row_is_reported_with_its_position_and_readers_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteEventStore::open(
        &dir.path().join("events.sqlite"),
        SqliteSync::Full,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("open");
    for i in 0..3 {
        store
            .append(
                &stream(i),
                ExpectedVersion::NoStream,
                vec![study_event("x", i)],
            )
            .await
            .expect("append");
    }
    // Damage as a bad tool or disk would: an unknown type at 2, a broken envelope at 3.
    sqlx::query("UPDATE events SET event_type = 'StudyTeleported' WHERE position = 2")
        .execute(store.reader_pool())
        .await
        .expect("plant unknown type");
    let events = store
        .read_all(0, 10)
        .await
        .expect("unknown types are still readable");
    let err = HubEvent::decode(&events[1]).expect_err("unknown type");
    assert!(err.to_string().contains("position 2"), "{err}");
    assert!(HubEvent::decode(&events[0]).is_ok() && HubEvent::decode(&events[2]).is_ok());

    sqlx::query("UPDATE events SET event_id = 'not-a-uuid' WHERE position = 3")
        .execute(store.reader_pool())
        .await
        .expect("plant corrupt envelope");
    match store.read_all(2, 10).await {
        Err(StoreError::Corrupt {
            position: 3,
            reason,
        }) => assert!(reason.contains("event_id")),
        other => panic!("expected a corrupt-row error at position 3, got {other:?}"),
    }
    assert_eq!(
        store
            .read_all(0, 2)
            .await
            .expect("rows before it read fine")
            .len(),
        2
    );
}

#[tokio::test]
async fn an_event_in_an_old_schema_version_is_stored_and_read_back_upcast() {
    use hub_events::catalog::{PurposeOfUse, ShareEvent};
    let (store, _b) = sqlite().await;
    let share_id = Uuid::now_v7();
    let v1 = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ShareGranted".into(),
        schema_version: 1,
        payload: serde_json::json!({
            "share_id": share_id, "study_uid": "1.2.3", "series_uid": null, "owner": "hosp-a",
            "grantee": {"kind": "alliance", "id": "north"}, "scope": "images", "expires_at": null
        })
        .to_string(),
        metadata: EventMetadata::new("hosp-a", "user:admin"),
    };
    let s = StreamId::new(Family::Share, share_id);
    store
        .append(&s, ExpectedVersion::NoStream, vec![v1])
        .await
        .expect("append v1");
    let stored = store.read_stream(&s, 1, 1).await.expect("read");
    assert_eq!(
        stored[0].schema_version, 1,
        "the stored event is never rewritten"
    );
    match HubEvent::decode(&stored[0]) {
        Ok(HubEvent::Share(ShareEvent::ShareGranted { purpose, .. })) => {
            assert_eq!(purpose, PurposeOfUse::Treatment)
        }
        other => panic!("expected an upcast ShareGranted, got {other:?}"),
    }
}

/// Reading ahead assumes nothing about gaps: a log with holes (rows removed by hand, say) is
/// still delivered exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_through_gaps_in_positions_delivers_each_event_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteEventStore::open(
        &dir.path().join("events.sqlite"),
        SqliteSync::Normal,
        StoreMetrics::unregistered(),
    )
    .await
    .expect("open");
    for b in 0..50 {
        let events = (0..100).map(|i| study_event("g", i)).collect();
        store
            .append(&stream(format!("g.{b}")), ExpectedVersion::NoStream, events)
            .await
            .expect("append");
    }
    sqlx::query("DELETE FROM events WHERE (position BETWEEN 1500 AND 1730) OR position IN (3000, 3001, 4999)")
        .execute(store.reader_pool())
        .await
        .expect("punch holes");
    let expected: Vec<u64> = (1..=5000)
        .filter(|p| !((1500..=1730).contains(p) || [3000, 3001, 4999].contains(p)))
        .collect();
    let store: Arc<dyn EventStore> = Arc::new(store);
    for page in [1, 7, 100, 1000] {
        let mut sub = Subscription::new(store.clone(), 0);
        let mut seen = Vec::new();
        while sub.position() < 5000 {
            let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(page))
                .await
                .expect("stalled")
                .expect("batch");
            seen.extend(batch.into_iter().map(|e| e.position));
        }
        assert_eq!(seen, expected, "page size {page}");
    }
}

/// Appends no commit waits for a checkpoint, yet the WAL does not grow without end: the
/// background checkpointer copies its frames, and the appends after it start the WAL over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_is_checkpointed_in_the_background_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.sqlite");
    let store = SqliteEventStore::open(&path, SqliteSync::Normal, StoreMetrics::unregistered())
        .await
        .expect("open");
    let wal = dir.path().join("events.sqlite-wal");
    let mut sizes = Vec::new();
    for round in 0..3u32 {
        // 600 single appends: well past SQLite's own 1,000-page checkpoint threshold in all.
        for i in 0..600 {
            store
                .append(
                    &stream(format!("{round}-{i}")),
                    ExpectedVersion::NoStream,
                    vec![study_event("wal", i)],
                )
                .await
                .expect("append");
        }
        sizes.push(std::fs::metadata(&wal).expect("the WAL file").len());
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    // Without checkpoints the WAL holds every round: the third would be three times the first.
    assert!(
        sizes[2] < sizes[0] * 3 / 2,
        "the WAL grew with every round of appends: {sizes:?} bytes"
    );
    // Every event was copied into the database file itself: a copy of that file alone, without
    // the WAL, holds them all.
    assert_eq!(head_of_file_alone(&path, "copy.sqlite").await, 1_800);
    drop(store);
}

/// The head of a copy (named `name`, beside it) of the SQLite log's database file at `path`
/// alone, without its WAL: what a checkpoint has copied into the file.
async fn head_of_file_alone(path: &std::path::Path, name: &str) -> u64 {
    let copy = path.with_file_name(name);
    std::fs::copy(path, &copy).expect("copy the database file");
    let copied = SqliteEventStore::open(&copy, SqliteSync::Normal, StoreMetrics::unregistered())
        .await
        .expect("open the copy");
    copied.head().await.expect("head")
}

/// Frames an earlier process left in the WAL (its checkpointer could not copy them while a
/// reader held an older snapshot, and it stopped) are copied by the next process soon after it
/// opens the log, without waiting for an append of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_left_by_an_earlier_process_is_checkpointed_after_opening() {
    use sqlx::{Connection, Executor};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.sqlite");
    let earlier = SqliteEventStore::open(&path, SqliteSync::Normal, StoreMetrics::unregistered())
        .await
        .expect("open");
    // A reader whose snapshot predates the appends: no checkpoint can copy them while it reads,
    // and while it stays connected the WAL is not removed when the earlier store closes.
    let mut reader = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("reader");
    reader.execute("BEGIN").await.expect("begin");
    let _: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
        .fetch_one(&mut reader)
        .await
        .expect("snapshot");
    for i in 0..200 {
        earlier
            .append(
                &stream(format!("left-{i}")),
                ExpectedVersion::NoStream,
                vec![study_event("left", i)],
            )
            .await
            .expect("append");
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    drop(earlier);
    reader.execute("COMMIT").await.expect("end the snapshot");
    assert_eq!(
        head_of_file_alone(&path, "before.sqlite").await,
        0,
        "the appends were already in the database file: the test shows nothing"
    );

    let next = SqliteEventStore::open(&path, SqliteSync::Normal, StoreMetrics::unregistered())
        .await
        .expect("open again");
    assert_eq!(next.head().await.expect("head"), 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        head_of_file_alone(&path, "after.sqlite").await,
        200,
        "the frames the earlier process left are still only in the WAL"
    );
    drop(next);
    reader.close().await.expect("close");
}
