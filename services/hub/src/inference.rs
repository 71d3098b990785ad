//! The inference service in the embedded hub (`hub serve`), and `hub backfill`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hub_events::catalog::StudyEvent;
use hub_events::{EventStore, HubEvent, StoreMetrics};
use hub_inference::{
    Inference, InferenceMetrics, PoolConfig, Recorded, Registry, Runtime, WorkerPool,
};
use hub_ingest::BlobStore;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::config::Config;
use crate::embedded;

/// How to turn inference on, for the one line that says it is off.
const HOW_TO_TURN_ON: &str = "pip install onnxruntime, then set ORT_DYLIB_PATH (config key \
                              `ort_dylib`) to its onnxruntime/capi/libonnxruntime.so.* and restart";

fn pool_config(config: &Config) -> PoolConfig {
    PoolConfig {
        workers: config.inference_workers,
        queue: config.inference_queue,
        threads_per_worker: config.inference_threads,
    }
}

/// ONNX Runtime and the models, or why inference cannot run (one line).
pub fn prepare(config: &Config) -> Result<(Runtime, Registry), String> {
    let Some(library) = &config.ort_dylib else {
        return Err(format!(
            "inference is off: ONNX Runtime is not configured; to turn it on: {HOW_TO_TURN_ON}"
        ));
    };
    let runtime = Runtime::load(library)
        .map_err(|e| format!("inference is off: {e}; to turn it on: {HOW_TO_TURN_ON}"))?;
    let loaded = Registry::load(&config.inference_models)
        .map_err(|e| format!("inference is off: {e} (config key `inference_models`)"))?;
    for skipped in &loaded.skipped {
        tracing::warn!("model skipped: {skipped}");
    }
    if loaded.registry.is_empty() {
        return Err(format!(
            "inference is off: no model is ready in {} (config key `inference_models`); see the \
             warnings above",
            config.inference_models.display()
        ));
    }
    Ok((runtime, loaded.registry))
}

/// Starts the inference service of `hub serve`, or says in one line why it is off.
pub fn start(
    config: &Config,
    store: Arc<dyn EventStore>,
    blobs: BlobStore,
    registry: &prometheus::Registry,
    stopped: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let (runtime, models) = match prepare(config) {
        Ok(ready) => ready,
        Err(line) => {
            tracing::warn!("{line}");
            return None;
        }
    };
    let pool = match WorkerPool::start(runtime, pool_config(config)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("inference is off: {e}");
            return None;
        }
    };
    let names: Vec<String> = models
        .models()
        .iter()
        .map(|m| format!("{} {}", m.id(), m.version()))
        .collect();
    tracing::info!(
        models = %names.join(", "),
        workers = config.inference_workers,
        "inference on: models run on each stabilized study"
    );
    let mut inference = Inference::new(store, blobs, Arc::new(models), pool);
    match InferenceMetrics::new(registry) {
        Ok(m) => inference = inference.with_metrics(m),
        Err(e) => tracing::warn!(error = %e, "inference metrics are not exported"),
    }
    let inference = Arc::new(inference);
    let checkpoint = config.data_dir.join("inference.position");
    Some(tokio::spawn(async move {
        while let Err(e) = inference.clone().follow(&checkpoint, stopped.clone()).await {
            tracing::error!(error = %e, "the inference service stopped following the log; retrying in 5 s");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }))
}

/// The inference service of `hub run inference`: models and worker pool ready, or why not.
pub fn for_group(
    config: &Config,
    store: Arc<dyn EventStore>,
    registry: &prometheus::Registry,
) -> Result<Arc<Inference>, String> {
    let (runtime, models) = prepare(config)?;
    let pool = WorkerPool::start(runtime, pool_config(config)).map_err(|e| e.to_string())?;
    let blobs = crate::parts::blobs(config).map_err(|e| format!("{e:#}"))?;
    let mut inference = Inference::new(store, blobs, Arc::new(models), pool);
    if let Ok(m) = InferenceMetrics::new(registry) {
        inference = inference.with_metrics(m);
    }
    Ok(Arc::new(inference))
}

/// `hub backfill --model ID [--version V]`: runs one model version over every past stabilized
/// study it applies to, skipping studies that already have its outcome.
pub async fn backfill(config: Config, model_id: &str, version: Option<&str>) -> anyhow::Result<()> {
    let _lock = embedded::lock_data_dir(&config, "hub backfill")?;
    let (runtime, registry) = prepare(&config).map_err(anyhow::Error::msg)?;
    let Some(model) = registry.find(model_id, version).cloned() else {
        let known: Vec<String> = registry
            .models()
            .iter()
            .map(|m| format!("{} {}", m.id(), m.version()))
            .collect();
        bail!(
            "no model {model_id}{} in {}; ready: {}",
            version.map(|v| format!(" version {v}")).unwrap_or_default(),
            config.inference_models.display(),
            known.join(", ")
        );
    };
    let hub = embedded::open(&config, StoreMetrics::unregistered()).await?;
    let blobs = crate::parts::blobs(&config)?;
    let studies = stabilized_studies(hub.store.as_ref(), &model).await?;
    let pool = WorkerPool::start(runtime, pool_config(&config)).map_err(anyhow::Error::msg)?;
    let inference = Inference::new(hub.store.clone(), blobs, Arc::new(registry.clone()), pool);

    let bar = ProgressBar::new(studies.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:40}] {pos}/{len} studies ({per_sec}, eta {eta}) {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.set_prefix("backfill");
    let started = Instant::now();
    let (mut recorded, mut findings, mut failed, mut done, mut other) = (0, 0, 0, 0, 0);
    for study in &studies {
        bar.set_message(study.clone());
        for r in inference.run_study(study, &[&model]).await? {
            match r {
                Recorded::Findings { findings: n, .. } => {
                    recorded += 1;
                    findings += n;
                }
                Recorded::Failed { reason, .. } => {
                    failed += 1;
                    bar.println(format!("{study}: failed: {reason}"));
                }
                Recorded::AlreadyDone { .. } => done += 1,
                Recorded::NotApplicable { .. } => other += 1,
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "backfill of {} {} over {} studies in {:.1} s: {recorded} recorded ({findings} findings), \
         {failed} failed, {done} already done, {other} without a matching series",
        model.id(),
        model.version(),
        studies.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The studies with a `StudyStabilized` whose modalities the model accepts, in log order.
async fn stabilized_studies(
    store: &dyn EventStore,
    model: &hub_inference::Model,
) -> anyhow::Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut studies = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            if let Ok(HubEvent::Study(StudyEvent::StudyStabilized {
                study_uid,
                modalities,
                ..
            })) = HubEvent::decode(e)
                && modalities
                    .iter()
                    .any(|m| model.manifest.filter.modality_matches(Some(m)))
                && seen.insert(study_uid.clone())
            {
                studies.push(study_uid);
            }
        }
    }
    Ok(studies)
}
