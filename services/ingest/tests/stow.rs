//! STOW-RS ingest against a real SQLite log and a real blob directory: durability order, no
//! half-written state on failure, idempotency under concurrency, and streaming limits.

use std::sync::Arc;

use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use futures::StreamExt;
use hub_events::catalog::StudyEvent;
use hub_events::{EventStore, HubEvent, SqliteEventStore, SqliteSync, StoreMetrics};
use hub_ingest::stow::reason;
use hub_ingest::{BlobStore, Ingest, StowError, StowRequest};

/// A synthetic CT instance (64×64, 16-bit), Part 10 encoded.
fn ct(study: &str, series: &str, sop: &str, fill: u8) -> Vec<u8> {
    ct_sized(study, series, sop, fill, 64)
}

/// A synthetic CT instance of `side`×`side` 16-bit pixels, Part 10 encoded.
fn ct_sized(study: &str, series: &str, sop: &str, fill: u8, side: u16) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    obj.put(text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE));
    obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop));
    obj.put(text(tags::STUDY_INSTANCE_UID, VR::UI, study));
    obj.put(text(tags::SERIES_INSTANCE_UID, VR::UI, series));
    obj.put(text(tags::MODALITY, VR::CS, "CT"));
    obj.put(text(tags::PATIENT_ID, VR::LO, "P-42"));
    obj.put(text(tags::PATIENT_NAME, VR::PN, "DOE^JANE"));
    obj.put(text(tags::STUDY_DATE, VR::DA, "20261124"));
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(side),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(side),
    ));
    obj.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16_u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U8(vec![fill; side as usize * side as usize * 2].into()),
    ));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .expect("meta");
    let mut out = Vec::new();
    file.write_all(&mut out).expect("encode");
    out
}

/// A multipart/related body as a stream of small chunks (as a network delivers it).
fn body(
    parts: &[Vec<u8>],
    boundary: &str,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut raw = Vec::new();
    for p in parts {
        raw.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        raw.extend_from_slice(p);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let chunks: Vec<Result<Bytes, std::io::Error>> = raw
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

fn request(boundary: &str) -> StowRequest {
    StowRequest {
        institution: "hosp-a".into(),
        actor: "user:test".into(),
        study_in_url: None,
        content_type: format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        base_url: "http://hub/dicom-web".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

struct World {
    dir: tempfile::TempDir,
    store: Arc<SqliteEventStore>,
    ingest: Ingest,
}

async fn world(limit: u64) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteEventStore::open(
            &dir.path().join("events.sqlite"),
            SqliteSync::Full,
            StoreMetrics::unregistered(),
        )
        .await
        .expect("store"),
    );
    let blobs = BlobStore::local(dir.path().join("blobs")).expect("blobs");
    // As the embedded hub runs it: intents as rows beside the blobs.
    let ingest = Ingest::new(store.clone(), blobs, limit).with_intent_rows();
    World { dir, store, ingest }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn every_stored_instance_has_a_durable_byte_exact_blob_named_by_its_event() {
    let w = world(1 << 30).await;
    let parts: Vec<Vec<u8>> = (0..5)
        .map(|i| ct("1.2.3", "1.2.3.1", &format!("1.2.3.1.{i}"), i as u8))
        .collect();
    let result = w
        .ingest
        .stow(&request("b0undary"), body(&parts, "b0undary"))
        .await
        .expect("stow");
    assert_eq!(
        (
            result.referenced.len(),
            result.failed.len(),
            result.http_status()
        ),
        (5, 0, 200)
    );
    let events = w.store.read_all(0, 100).await.expect("read");
    let decoded: Vec<HubEvent> = events
        .iter()
        .map(|e| HubEvent::decode(e).expect("decode"))
        .collect();
    assert!(
        matches!(&decoded[0], HubEvent::Study(StudyEvent::StudyRegistered { owner, patient_id, .. })
        if owner == "hosp-a" && patient_id.as_deref() == Some("P-42"))
    );
    let HubEvent::Study(StudyEvent::InstancesStored { series, .. }) = &decoded[1] else {
        panic!("expected InstancesStored, got {:?}", decoded[1]);
    };
    assert_eq!(series[0].instances.len(), 5);
    for (i, inst) in series[0].instances.iter().enumerate() {
        let bytes = std::fs::read(w.dir.path().join("blobs").join(&inst.blob_key)).expect("blob");
        assert_eq!(bytes, parts[i], "byte-exact original");
        use sha2::Digest;
        let sha: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha, inst.sha256);
    }
    assert!(files_under(&w.dir.path().join("blobs/staging")).is_empty());
    // The intent goes after the answer: waited for, not assumed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.ingest.intents_kept().await.expect("intents") > 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        w.ingest.intents_kept().await.expect("intents"),
        0,
        "a settled batch leaves no intent"
    );
    // A local store keeps intents as rows of one file, not a file created and removed per batch.
    assert!(
        !w.dir.path().join("blobs/intents").exists(),
        "no intent file: {:?}",
        files_under(&w.dir.path().join("blobs/intents"))
    );
}

/// The files of a local blob directory that are blobs (not its intent journal).
fn blob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(hub_ingest::intents::LOCAL_FILE))
        })
        .collect()
}

/// The log becomes unwritable between receiving and recording (a real fault, not a mock).
async fn refuse_appends(store: &SqliteEventStore) {
    sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        .execute(store.reader_pool())
        .await
        .expect("trigger");
}

#[tokio::test]
async fn a_failed_append_keeps_its_moved_blob_until_the_sweep_finds_no_event_naming_it() {
    let w = world(1 << 30).await;
    refuse_appends(&w.store).await;
    // Two studies in one request, so the second is still staged when the first fails.
    let parts = vec![
        ct("1.2.4", "1.2.4.1", "1.2.4.1.1", 1),
        ct("1.2.9", "1.2.9.1", "1.2.9.1.1", 2),
    ];
    let err = w
        .ingest
        .stow(&request("b"), body(&parts, "b"))
        .await
        .expect_err("append fails");
    assert!(matches!(err, StowError::Store(_)), "{err}");
    assert_eq!(w.store.head().await.expect("head"), 0);
    // Whether a failed append took effect is not known to the caller (a connection lost at
    // commit): the moved blob stays, named by its intent, until the sweep asks the log.
    let blobs = w.dir.path().join("blobs");
    let left = blob_files(&blobs);
    assert_eq!(
        (left.len(), w.ingest.intents_kept().await.expect("intents")),
        (2, 1),
        "the first study's blob and metadata, and their intent; the second study was never moved: {left:?}"
    );
    assert_eq!(
        w.ingest
            .sweep_intents(std::time::Duration::from_secs(3600))
            .await
            .expect("sweep"),
        (0, 0),
        "an intent younger than the minimum age may be a batch being recorded"
    );
    // Settled by another process on the same blobs (the hub started again after a crash): the
    // intent is durable beside the blobs, not held by the process that wrote it.
    drop(w.ingest);
    let restarted = Ingest::new(
        w.store.clone(),
        BlobStore::local(&blobs).expect("blobs"),
        1 << 30,
    )
    .with_intent_rows();
    let swept = restarted
        .sweep_intents(std::time::Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(swept, (1, 1), "one intent settled, its one blob removed");
    assert!(blob_files(&blobs).is_empty(), "no blob without its event");
    assert_eq!(restarted.intents_kept().await.expect("intents"), 0);
}

/// On an object store other than a local directory (S3 in the distributed mode; the crate's own
/// in-memory store here), an intent is an object under `intents/`, settled by the same sweep.
#[tokio::test]
async fn on_an_object_store_an_intent_is_an_object_the_sweep_settles() {
    let w = world(1 << 30).await;
    refuse_appends(&w.store).await;
    let objects = Arc::new(object_store::memory::InMemory::new());
    let ingest = Ingest::new(
        w.store.clone(),
        BlobStore::from_store(objects.clone()),
        1 << 30,
    );
    let parts = vec![ct("1.2.5", "1.2.5.1", "1.2.5.1.1", 1)];
    let err = ingest
        .stow(&request("o"), body(&parts, "o"))
        .await
        .expect_err("append fails");
    assert!(matches!(err, StowError::Store(_)), "{err}");
    let keys = |prefix: &'static str| {
        let objects = objects.clone();
        async move {
            use object_store::ObjectStore;
            objects
                .list(Some(&object_store::path::Path::from(prefix)))
                .map(|m| m.expect("listed").location.to_string())
                .collect::<Vec<_>>()
                .await
        }
    };
    assert_eq!(
        (keys("intents").await.len(), keys("studies").await.len()),
        (1, 2),
        "one intent object; the blob and its metadata"
    );
    assert_eq!(ingest.intents_kept().await.expect("intents"), 1);
    assert_eq!(
        ingest
            .sweep_intents(std::time::Duration::ZERO)
            .await
            .expect("sweep"),
        (1, 1)
    );
    assert!(keys("intents").await.is_empty() && keys("studies").await.is_empty());
}

/// An event store whose append takes effect but whose answer is lost, as when the connection
/// drops while the commit is acknowledged: the real SQLite log underneath.
struct AnswerLost(Arc<SqliteEventStore>);

#[async_trait::async_trait]
impl EventStore for AnswerLost {
    async fn append(
        &self,
        stream: &hub_events::StreamId,
        expected: hub_events::ExpectedVersion,
        events: Vec<hub_events::NewEvent>,
    ) -> Result<hub_events::AppendResult, hub_events::StoreError> {
        self.0.append(stream, expected, events).await?;
        Err(hub_events::StoreError::Closed)
    }
    async fn read_stream(
        &self,
        stream: &hub_events::StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<hub_events::RecordedEvent>, hub_events::StoreError> {
        self.0.read_stream(stream, from_version, limit).await
    }
    async fn read_all(
        &self,
        after: hub_events::Position,
        limit: usize,
    ) -> Result<Vec<hub_events::RecordedEvent>, hub_events::StoreError> {
        self.0.read_all(after, limit).await
    }
    async fn head(&self) -> Result<hub_events::Position, hub_events::StoreError> {
        self.0.head().await
    }
    async fn published(&self, relay: &str) -> Result<hub_events::Position, hub_events::StoreError> {
        self.0.published(relay).await
    }
    async fn set_published(
        &self,
        relay: &str,
        position: hub_events::Position,
    ) -> Result<(), hub_events::StoreError> {
        self.0.set_published(relay, position).await
    }
    fn bus(&self) -> &hub_events::Bus {
        self.0.bus()
    }
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[tokio::test]
async fn an_append_whose_answer_was_lost_keeps_its_blobs_and_the_sweep_keeps_what_the_log_names() {
    let w = world(1 << 30).await;
    let blobs = BlobStore::local(w.dir.path().join("blobs")).expect("blobs");
    // Intents as files in the directory (as the distributed mode keeps them on its volume): the
    // sweep of a process keeping rows settles them too.
    let lost = Ingest::new(Arc::new(AnswerLost(w.store.clone())), blobs, 1 << 30);
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| ct("1.2.77", "1.2.77.1", &format!("1.2.77.1.{i}"), i as u8))
        .collect();
    let err = lost
        .stow(&request("lost"), body(&parts, "lost"))
        .await
        .expect_err("the answer is lost");
    assert!(matches!(err, StowError::Store(_)), "{err}");
    assert!(
        w.store.head().await.expect("head") > 0,
        "the append took effect"
    );
    assert_eq!(
        files_under(&w.dir.path().join("blobs/intents")).len(),
        1,
        "its intent, a file, stays for the sweep"
    );
    // A crash between the blobs' move and the append leaves the same files: an intent of
    // blobs, and no event (a second study, written as a crash would leave it).
    let orphan = ct("1.2.78", "1.2.78.1", "1.2.78.1.1", 7);
    let crashed = world(1 << 30).await;
    crashed
        .ingest
        .stow(&request("c"), body(std::slice::from_ref(&orphan), "c"))
        .await
        .expect("stored in another log");
    let moved: Vec<_> = files_under(&crashed.dir.path().join("blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    assert_eq!(moved.len(), 1);
    let relative = moved[0]
        .strip_prefix(crashed.dir.path().join("blobs"))
        .expect("under blobs");
    let target = w.dir.path().join("blobs").join(relative);
    std::fs::create_dir_all(target.parent().expect("parent")).expect("dirs");
    std::fs::copy(&moved[0], &target).expect("the moved blob");
    let key = relative.to_string_lossy().into_owned();
    let sha = key.rsplit('.').nth(1).expect("hash in the key").to_owned();
    let full_sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&orphan)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert!(full_sha.starts_with(&sha));
    // As intent objects (an earlier version kept a local store's intents so, as S3 still does):
    // the sweep settles those beside the rows.
    std::fs::create_dir_all(w.dir.path().join("blobs/intents")).expect("intents");
    std::fs::write(
        w.dir.path().join("blobs/intents/crash.json"),
        serde_json::json!({"study_uid": "1.2.78", "instances": [
            {"sop_instance_uid": "1.2.78.1.1", "sha256": full_sha, "blob_key": key}]})
        .to_string(),
    )
    .expect("intent");
    // And an intent cut off while it was written: nothing it would list was moved yet.
    std::fs::write(
        w.dir.path().join("blobs/intents/torn.json"),
        b"{\"study_uid\": \"1.2",
    )
    .expect("torn");

    let swept = w
        .ingest
        .sweep_intents(std::time::Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(
        swept,
        (3, 1),
        "three intents settled; only the crashed batch's blob removed"
    );
    let left = files_under(&w.dir.path().join("blobs"));
    assert!(
        !left
            .iter()
            .any(|p| p.starts_with(w.dir.path().join("blobs/intents"))),
        "{left:?}"
    );
    assert_eq!(w.ingest.intents_kept().await.expect("intents"), 0);
    assert!(!target.exists(), "the blob no event names is gone");
    // Every blob the log names is there, byte-exact.
    let mut named = 0;
    for e in w.store.read_all(0, 100).await.expect("log") {
        if let Ok(HubEvent::Study(StudyEvent::InstancesStored { series, .. })) =
            HubEvent::decode(&e)
        {
            for i in series.iter().flat_map(|s| &s.instances) {
                let bytes = std::fs::read(w.dir.path().join("blobs").join(&i.blob_key))
                    .expect("named blob");
                assert_eq!(bytes.len() as u64, i.size_bytes);
                named += 1;
            }
        }
    }
    assert_eq!(named, 3);
}

#[tokio::test]
async fn an_oversize_body_is_refused_and_nothing_is_kept() {
    let w = world(20_000).await;
    let parts: Vec<Vec<u8>> = (0..5)
        .map(|i| ct("1.2.5", "1.2.5.1", &format!("1.2.5.1.{i}"), 7))
        .collect();
    let err = w
        .ingest
        .stow(&request("b"), body(&parts, "b"))
        .await
        .expect_err("too large");
    assert!(matches!(err, StowError::TooLarge(20_000)), "{err}");
    assert!(files_under(&w.dir.path().join("blobs")).is_empty());
    assert_eq!(w.store.head().await.expect("head"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_the_same_instances_record_each_once() {
    let w = world(1 << 30).await;
    let parts: Vec<Vec<u8>> = (0..4)
        .map(|i| ct("1.2.6", "1.2.6.1", &format!("1.2.6.1.{i}"), i as u8))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let ingest = w.ingest.clone();
        let parts = parts.clone();
        tasks.push(tokio::spawn(async move {
            ingest.stow(&request("c"), body(&parts, "c")).await
        }));
    }
    for t in tasks {
        let r = t.await.expect("join").expect("stow");
        assert_eq!(
            (r.referenced.len(), r.failed.len()),
            (4, 0),
            "every request sees success"
        );
    }
    let mut recorded = Vec::new();
    for e in w.store.read_all(0, 100).await.expect("read") {
        if let Ok(HubEvent::Study(StudyEvent::InstancesStored { series, .. })) =
            HubEvent::decode(&e)
        {
            recorded.extend(
                series
                    .into_iter()
                    .flat_map(|s| s.instances)
                    .map(|i| i.sop_instance_uid),
            );
        }
    }
    recorded.sort();
    assert_eq!(
        recorded,
        (0..4).map(|i| format!("1.2.6.1.{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_part_that_is_not_dicom_fails_alone() {
    let w = world(1 << 30).await;
    let parts = vec![
        b"garbage".to_vec(),
        ct("1.2.7", "1.2.7.1", "1.2.7.1.1", 3),
        Vec::new(),
    ];
    let r = w
        .ingest
        .stow(&request("g"), body(&parts, "g"))
        .await
        .expect("stow");
    assert_eq!(r.referenced.len(), 1);
    assert_eq!(
        r.failed.iter().map(|f| f.reason).collect::<Vec<_>>(),
        vec![reason::CANNOT_UNDERSTAND; 2]
    );
    assert_eq!(r.http_status(), 202);
}

/// Parts are finished (stored, hashed, read) beside the receiving of the next ones; parts larger
/// than the blob store's upload chunk (8 MiB) stream to it instead of being held. Either way
/// each original is stored byte-exact under its hash, failures keep their parts' order, and
/// nothing is left staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_parts_finished_side_by_side_are_stored_byte_exact() {
    let w = world(1 << 30).await;
    let mut parts: Vec<Vec<u8>> = (0..9)
        .map(|i| ct("1.2.9", "1.2.9.1", &format!("1.2.9.1.{i}"), i as u8))
        .collect();
    // 2,100 × 2,100 × 2 bytes: 8.4 MiB of pixels, past the upload chunk.
    parts.insert(3, ct_sized("1.2.9", "1.2.9.2", "1.2.9.2.1", 77, 2_100));
    parts.insert(1, b"not dicom, first failure".to_vec());
    parts.insert(8, b"not dicom either, second failure".to_vec());
    assert!(parts[4].len() > 8 * 1024 * 1024, "{}", parts[4].len());
    let r = w
        .ingest
        .stow(&request("big"), body(&parts, "big"))
        .await
        .expect("stow");
    assert_eq!((r.referenced.len(), r.failed.len()), (10, 2));
    assert!(r.failed[0].detail.starts_with("part 2:"), "{:?}", r.failed);
    assert!(r.failed[1].detail.starts_with("part 9:"), "{:?}", r.failed);
    let mut stored = 0;
    for e in w.store.read_all(0, 100).await.expect("read") {
        if let Ok(HubEvent::Study(StudyEvent::InstancesStored { series, .. })) =
            HubEvent::decode(&e)
        {
            for inst in series.iter().flat_map(|s| &s.instances) {
                let bytes =
                    std::fs::read(w.dir.path().join("blobs").join(&inst.blob_key)).expect("blob");
                assert!(
                    parts.contains(&bytes),
                    "{} is byte-exact",
                    inst.sop_instance_uid
                );
                use sha2::Digest;
                let sha: String = sha2::Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(sha, inst.sha256, "{}", inst.sop_instance_uid);
                stored += 1;
            }
        }
    }
    assert_eq!(stored, 10);
    assert!(files_under(&w.dir.path().join("blobs/staging")).is_empty());
}

/// Waits (on pushed events, not by polling) until the log holds `n` StudyStabilized events.
async fn stabilized(store: Arc<SqliteEventStore>, n: usize) -> Vec<StudyEvent> {
    let store: Arc<dyn EventStore> = store;
    let mut sub = hub_events::Subscription::new(store, 0);
    let mut found = Vec::new();
    while found.len() < n {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next_batch(100))
            .await
            .expect("stabilization did not happen")
            .expect("read");
        for e in batch {
            if let Ok(HubEvent::Study(s @ StudyEvent::StudyStabilized { .. })) =
                HubEvent::decode(&e)
            {
                found.push(s);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_is_stabilized_once_after_its_quiet_period_and_again_after_late_instances() {
    use hub_ingest::stabilize::Stabilizer;
    let w = world(1 << 30).await;
    let quiet = std::time::Duration::from_millis(300);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = tokio::spawn(Stabilizer::new(w.store.clone(), quiet).run(stopped.clone()));

    let a: Vec<Vec<u8>> = (0..3)
        .map(|i| ct("2.1", "2.1.1", &format!("2.1.1.{i}"), 1))
        .collect();
    let mut b: Vec<Vec<u8>> = (0..2)
        .map(|i| ct("2.2", "2.2.1", &format!("2.2.1.{i}"), 2))
        .collect();
    b.push(ct("2.2", "2.2.2", "2.2.2.0", 3));
    w.ingest
        .stow(&request("s"), body(&a, "s"))
        .await
        .expect("stow a");
    w.ingest
        .stow(&request("s"), body(&b, "s"))
        .await
        .expect("stow b");
    let found = stabilized(w.store.clone(), 2).await;
    let counts: Vec<(String, u32, u32)> = found
        .iter()
        .map(|e| match e {
            StudyEvent::StudyStabilized {
                study_uid,
                series_count,
                instance_count,
                ..
            } => (study_uid.clone(), *series_count, *instance_count),
            _ => unreachable!(),
        })
        .collect();
    assert!(counts.contains(&("2.1".into(), 1, 3)), "{counts:?}");
    assert!(counts.contains(&("2.2".into(), 2, 3)), "{counts:?}");

    // A late instance re-opens the study; it is stabilized again with the new count.
    let late = vec![ct("2.1", "2.1.1", "2.1.1.9", 4)];
    w.ingest
        .stow(&request("s"), body(&late, "s"))
        .await
        .expect("late");
    let found = stabilized(w.store.clone(), 3).await;
    assert!(
        matches!(&found[2], StudyEvent::StudyStabilized { study_uid, instance_count: 4, .. } if study_uid == "2.1")
    );
    let _ = stop.send(true);
    runner.await.expect("join").expect("stabilizer");

    // A restarted stabilizer rebuilds its state from the log and stabilizes nothing twice.
    let head = w.store.head().await.expect("head");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let again = tokio::spawn(Stabilizer::new(w.store.clone(), quiet).run(stopped));
    tokio::time::sleep(quiet * 3).await;
    let _ = stop.send(true);
    again.await.expect("join").expect("stabilizer");
    assert_eq!(
        w.store.head().await.expect("head"),
        head,
        "nothing appended twice"
    );
}

/// Two ingest processes on one log: the one that keeps a folded study state decides on it first
/// without reading the log; the append's expected version catches what the other appended, and
/// the retry on the log refuses a conflicting re-send and takes an identical one as stored.
#[tokio::test]
async fn a_kept_study_state_catches_up_with_appends_of_another_process() {
    let w = world(1 << 30).await;
    let other = Ingest::new(
        w.store.clone(),
        BlobStore::local(w.dir.path().join("blobs")).expect("blobs"),
        1 << 30,
    );
    let send = |ingest: &Ingest, parts: Vec<Vec<u8>>| {
        let ingest = ingest.clone();
        async move {
            ingest
                .stow(&request("kb"), body(&parts, "kb"))
                .await
                .expect("stow")
        }
    };
    // This process folds the study (and keeps its state).
    let r = send(&w.ingest, vec![ct("1.2.77", "1.2.77.1", "1.2.77.1.1", 1)]).await;
    assert_eq!((r.referenced.len(), r.failed.len()), (1, 0));
    // The other one adds an instance behind its back.
    let r = send(&other, vec![ct("1.2.77", "1.2.77.1", "1.2.77.1.2", 2)]).await;
    assert_eq!((r.referenced.len(), r.failed.len()), (1, 0));
    // The same SOP Instance with other bytes through the first process: refused, as the log says.
    let r = send(&w.ingest, vec![ct("1.2.77", "1.2.77.1", "1.2.77.1.2", 9)]).await;
    assert_eq!(r.failed.len(), 1, "a conflict, not an overwrite");
    assert!(
        r.failed[0].detail.contains("never overwritten"),
        "{}",
        r.failed[0].detail
    );
    // And identical bytes are idempotent there too: no new event.
    let head = w.store.head().await.expect("head");
    let r = send(&w.ingest, vec![ct("1.2.77", "1.2.77.1", "1.2.77.1.2", 2)]).await;
    assert_eq!((r.referenced.len(), r.failed.len()), (1, 0));
    assert_eq!(
        w.store.head().await.expect("head"),
        head,
        "no event for a re-send"
    );
    let stored: Vec<String> = study_events(&w.store, "1.2.77")
        .await
        .iter()
        .filter_map(|e| match e {
            StudyEvent::InstancesStored { series, .. } => Some(
                series
                    .iter()
                    .flat_map(|s| s.instances.iter().map(|i| i.sop_instance_uid.clone()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        stored,
        ["1.2.77.1.1", "1.2.77.1.2"],
        "each instance stored once"
    );
}

/// A blob that cannot be moved to its final key (a file stands where its directory must go):
/// the request fails, and the instances of the same batch already moved are removed again, so no
/// blob is left that no event names.
#[tokio::test]
async fn a_failed_commit_removes_the_blobs_of_its_batch_already_moved() {
    let w = world(1 << 30).await;
    let blocked = w.dir.path().join("blobs/studies/1.2.88/1.2.88.2");
    std::fs::create_dir_all(blocked.parent().expect("parent")).expect("dirs");
    std::fs::write(&blocked, b"not a directory").expect("blocker");
    let parts: Vec<Vec<u8>> = (0..4)
        .map(|i| ct("1.2.88", "1.2.88.1", &format!("1.2.88.1.{i}"), i as u8))
        .chain([ct("1.2.88", "1.2.88.2", "1.2.88.2.1", 9)])
        .collect();
    let err = w
        .ingest
        .stow(&request("cb"), body(&parts, "cb"))
        .await
        .expect_err("the commit fails");
    assert!(matches!(err, StowError::Blob(_)), "{err}");
    let left: Vec<_> = blob_files(&w.dir.path().join("blobs"))
        .into_iter()
        .filter(|p| *p != blocked)
        .collect();
    assert!(left.is_empty(), "blobs no event names: {left:?}");
    assert_eq!(w.store.head().await.expect("head"), 0, "and no event");
}

#[tokio::test]
async fn an_old_intent_leaves_a_blob_that_a_batch_in_flight_names_again() {
    let w = world(1 << 30).await;
    let blobs = w.dir.path().join("blobs");
    let key = "studies/1.2.66/1.2.66.1/1.2.66.1.1.00112233445566aa.dcm";
    std::fs::create_dir_all(blobs.join("studies/1.2.66/1.2.66.1")).expect("dirs");
    std::fs::write(blobs.join(key), ct("1.2.66", "1.2.66.1", "1.2.66.1.1", 3)).expect("blob");
    std::fs::create_dir_all(blobs.join("intents")).expect("intents");
    let intent = serde_json::json!({"study_uid": "1.2.66", "instances": [
        {"sop_instance_uid": "1.2.66.1.1", "sha256": format!("00112233445566aa{}", "0".repeat(48)), "blob_key": key}]})
    .to_string();
    // Left by a crash two hours ago ...
    let crashed = blobs.join("intents/crashed.json");
    std::fs::write(&crashed, &intent).expect("old intent");
    std::fs::File::options()
        .write(true)
        .open(&crashed)
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        })
        .expect("backdate");
    // ... and the same instance being recorded again right now (the same key).
    let young = blobs.join("intents/in-flight.json");
    std::fs::write(&young, &intent).expect("young intent");
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(w.ingest.sweep_intents(hour).await.expect("sweep"), (0, 0));
    assert!(
        blobs.join(key).exists() && crashed.exists(),
        "the blob is the batch in flight's, and the old intent waits for a later sweep"
    );
    // The batch failed and removed its intent: nothing names the blob any more.
    std::fs::remove_file(&young).expect("settled");
    assert_eq!(w.ingest.sweep_intents(hour).await.expect("sweep"), (1, 1));
    assert!(!blobs.join(key).exists() && !crashed.exists());
}

/// A part whose first chunk is shorter than the preamble and its `DICM` (a network read that
/// ended just after the part's headers) is read as well as one that arrived whole: the header
/// is read across the received chunks, not from the first one alone.
#[tokio::test]
async fn a_part_whose_first_chunk_is_short_is_read_across_chunks() {
    let w = world(1 << 30).await;
    // Multer holds back the last bytes of what it has (they could start the boundary), so the
    // part's first chunk is shorter than the bytes received: every split up to 200 is tried.
    for first in 1usize..=200 {
        let sop = format!("1.2.11.1.{first}");
        let part = ct("1.2.11", "1.2.11.1", &sop, 9);
        let head = "--short\r\nContent-Type: application/dicom\r\n\r\n";
        let mut raw = head.as_bytes().to_vec();
        raw.extend_from_slice(&part);
        raw.extend_from_slice(b"\r\n--short--\r\n");
        // The headers and `first` bytes of the part, then the rest in one piece.
        let split = head.len() + first;
        // The rest arrives later, as from a network: the part is begun with what has come.
        let chunks = vec![
            Bytes::copy_from_slice(&raw[..split]),
            Bytes::copy_from_slice(&raw[split..]),
        ];
        let arriving =
            futures::stream::iter(chunks.into_iter().enumerate()).then(|(n, chunk)| async move {
                if n > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Ok::<_, std::io::Error>(chunk)
            });
        let r = w
            .ingest
            .stow(&request("short"), arriving)
            .await
            .expect("stow");
        assert!(
            r.failed.is_empty(),
            "first chunk of {first} bytes: {:?}",
            r.failed
        );
        assert_eq!(r.referenced.len(), 1, "first chunk of {first} bytes");
        assert_eq!(r.referenced[0].sop_instance_uid, sop);
    }
}

/// The study events of `study` in the log, in order.
async fn study_events(store: &SqliteEventStore, study: &str) -> Vec<StudyEvent> {
    let stream = hub_events::StreamId::new(hub_events::Family::Study, study);
    store
        .read_stream(&stream, 1, 1000)
        .await
        .expect("read")
        .iter()
        .filter_map(|e| match HubEvent::decode(e) {
            Ok(HubEvent::Study(s)) => Some(s),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_instance_sent_again_after_its_study_was_purged_is_stored_again() {
    let w = world(1 << 30).await;
    let part = ct("1.2.82", "1.2.82.1", "1.2.82.1.1", 1);
    let stow = || {
        let (ingest, parts) = (w.ingest.clone(), vec![part.clone()]);
        async move {
            ingest
                .stow(&request("purged"), body(&parts, "purged"))
                .await
                .expect("stow")
        }
    };
    assert_eq!(stow().await.http_status(), 200);
    // Purged by another writer: the state this ingest kept still holds the instance.
    let stream = hub_events::StreamId::new(hub_events::Family::Study, "1.2.82");
    let purged = StudyEvent::StudyPurged {
        study_uid: "1.2.82".into(),
        reason: "retention ended".into(),
        purged_at: chrono::Utc::now(),
    };
    w.store
        .append(
            &stream,
            hub_events::ExpectedVersion::Any,
            vec![purged.to_new_event(hub_events::EventMetadata::new("hosp-a", "user:test"))],
        )
        .await
        .expect("purge");
    let again = stow().await;
    assert_eq!((again.referenced.len(), again.failed.len()), (1, 0));
    let events = study_events(&w.store, "1.2.82").await;
    assert!(
        matches!(events.last(), Some(StudyEvent::InstancesStored { .. })),
        "stored again after the purge, not taken as already stored: {events:?}"
    );
}
