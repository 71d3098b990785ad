//! The inference service: for each `StudyStabilized`, the models whose filters match run over the
//! study's series on the worker pool, and the outcome is appended to `diagnosis-<StudyUID>` as
//! `AiFindingsRecorded` or `AiInferenceFailed`. A model version that already has an outcome for a
//! study is not run again (the diagnosis stream is read first, and the append names its version).
//!
//! The study's series and blob keys come from its own stream in the log (not from the catalog read
//! model, which may not have applied the last `InstancesStored` yet when the study stabilizes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use hub_events::catalog::{DiagnosisEvent, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, Position, RecordedEvent,
    StoreError, StreamId, Subscription,
};
use hub_ingest::BlobStore;
use tokio::sync::watch;

use crate::manifest::{Model, Registry};
use crate::metrics::InferenceMetrics;
use crate::pixels;
use crate::pool::{InstanceBytes, JobOutcome, WorkerPool};

/// A study as its stream tells it: the owner and each series with its instances in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StudyPlan {
    pub study_uid: String,
    pub owner: String,
    pub series: Vec<PlannedSeries>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlannedSeries {
    pub series_uid: String,
    pub modality: Option<String>,
    /// (instance number, SOP Instance UID, blob key), sorted by number then UID.
    pub instances: Vec<(Option<i32>, String, String)>,
}

/// What running one model over one study gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Findings {
        outcome: JobOutcome,
        millis: u64,
    },
    Failed(String),
    /// No series of the study passes the model's filter: nothing is recorded.
    NotApplicable,
}

/// What `run_study` did for one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    Findings { model_id: String, findings: usize },
    Failed { model_id: String, reason: String },
    AlreadyDone { model_id: String },
    NotApplicable { model_id: String },
}

pub struct Inference {
    store: Arc<dyn EventStore>,
    blobs: BlobStore,
    registry: Arc<Registry>,
    pool: WorkerPool,
    /// Studies handled at once by `follow` (each spreads its series over the pool).
    concurrent_studies: usize,
    metrics: InferenceMetrics,
}

impl Inference {
    pub fn new(
        store: Arc<dyn EventStore>,
        blobs: BlobStore,
        registry: Arc<Registry>,
        pool: WorkerPool,
    ) -> Inference {
        Inference {
            store,
            blobs,
            registry,
            pool,
            concurrent_studies: 2,
            metrics: InferenceMetrics::unregistered(),
        }
    }

    /// Counts outcomes, slices and times into `metrics` (registered by the caller).
    pub fn with_metrics(mut self, metrics: InferenceMetrics) -> Inference {
        self.metrics = metrics;
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Reads the study's stream into a plan. A study that never registered has an empty owner.
    pub async fn plan(&self, study_uid: &str) -> Result<StudyPlan, StoreError> {
        let stream = StreamId::new(Family::Study, study_uid);
        let mut plan = StudyPlan {
            study_uid: study_uid.to_owned(),
            ..StudyPlan::default()
        };
        let mut series: BTreeMap<String, PlannedSeries> = BTreeMap::new();
        for e in &read_whole_stream(self.store.as_ref(), &stream).await? {
            match HubEvent::decode(e) {
                Ok(HubEvent::Study(StudyEvent::StudyRegistered { owner, .. })) => {
                    plan.owner = owner
                }
                Ok(HubEvent::Study(StudyEvent::InstancesStored { series: s, .. })) => {
                    for batch in s {
                        let entry = series.entry(batch.series_uid.clone()).or_insert_with(|| {
                            PlannedSeries {
                                series_uid: batch.series_uid.clone(),
                                ..PlannedSeries::default()
                            }
                        });
                        if entry.modality.is_none() {
                            entry.modality = batch.modality.clone();
                        }
                        entry.instances.extend(
                            batch
                                .instances
                                .into_iter()
                                .map(|i| (i.instance_number, i.sop_instance_uid, i.blob_key)),
                        );
                    }
                }
                Ok(HubEvent::Study(StudyEvent::StudyPurged { .. })) => series.clear(),
                _ => {}
            }
            if plan.owner.is_empty() {
                plan.owner = e.metadata.tenant.clone();
            }
        }
        plan.series = series
            .into_values()
            .map(|mut s| {
                s.instances.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                s.instances.dedup_by(|a, b| a.1 == b.1);
                s
            })
            .collect();
        Ok(plan)
    }

    /// Runs `model` over the study's matching series without recording anything.
    pub async fn infer(&self, plan: &StudyPlan, model: &Model) -> Outcome {
        let started = Instant::now();
        let manifest = &model.manifest;
        let model = Arc::new(model.clone());
        let mut replies = Vec::new();
        for series in &plan.series {
            if !manifest.filter.modality_matches(series.modality.as_deref()) {
                continue;
            }
            let Some((_, first_uid, first_key)) = series.instances.first() else {
                continue;
            };
            let first = match self.blobs.get(first_key).await {
                Ok(b) => b,
                Err(e) => return Outcome::Failed(format!("instance {first_uid}: blob: {e}")),
            };
            let header = match pixels::header(&first) {
                Ok(h) => h,
                Err(e) => return Outcome::Failed(format!("instance {first_uid}: {e}")),
            };
            if !manifest
                .filter
                .body_part_matches(header.body_part.as_deref())
            {
                continue;
            }
            let chosen: Vec<usize> = if header.frames > 1 {
                (0..series.instances.len()).collect()
            } else {
                pixels::sample(series.instances.len(), manifest.input.max_slices)
            };
            for chunk in chosen.chunks(manifest.input.batch) {
                let mut instances = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    let (_, sop, key) = &series.instances[i];
                    let bytes = if key == first_key {
                        first.clone()
                    } else {
                        match self.blobs.get(key).await {
                            Ok(b) => b,
                            Err(e) => return Outcome::Failed(format!("instance {sop}: blob: {e}")),
                        }
                    };
                    instances.push(InstanceBytes {
                        series_uid: series.series_uid.clone(),
                        sop_instance_uid: sop.clone(),
                        bytes,
                    });
                }
                // Waits here while the pool's queue is full.
                match self.pool.submit(model.clone(), instances).await {
                    Ok(rx) => replies.push(rx),
                    Err(e) => return Outcome::Failed(e),
                }
            }
        }
        if replies.is_empty() {
            return Outcome::NotApplicable;
        }
        let mut total = JobOutcome::default();
        for rx in replies {
            match rx.await {
                Ok(Ok(o)) => {
                    total.findings.extend(o.findings);
                    total.slices += o.slices;
                }
                Ok(Err(e)) => return Outcome::Failed(e),
                Err(_) => return Outcome::Failed("an inference worker stopped".into()),
            }
        }
        Outcome::Findings {
            outcome: total,
            millis: started.elapsed().as_millis() as u64,
        }
    }

    /// Whether `model` (id and version) already has an outcome on the study's diagnosis stream,
    /// and the stream's version.
    async fn already_done(
        &self,
        study_uid: &str,
        model: &Model,
    ) -> Result<(bool, u64), StoreError> {
        let stream = StreamId::new(Family::Diagnosis, study_uid);
        let (mut version, mut done) = (0, false);
        for e in &read_whole_stream(self.store.as_ref(), &stream).await? {
            version = e.stream_version;
            match HubEvent::decode(e) {
                Ok(HubEvent::Diagnosis(DiagnosisEvent::AiFindingsRecorded {
                    model_id,
                    model_version,
                    ..
                }))
                | Ok(HubEvent::Diagnosis(DiagnosisEvent::AiInferenceFailed {
                    model_id,
                    model_version,
                    ..
                })) if model_id == model.id() && model_version == model.version() => done = true,
                _ => {}
            }
        }
        Ok((done, version))
    }

    /// Runs each of `models` that has no outcome yet on `study_uid` and records its outcome.
    pub async fn run_study(
        &self,
        study_uid: &str,
        models: &[&Model],
    ) -> Result<Vec<Recorded>, StoreError> {
        let plan = self.plan(study_uid).await?;
        let mut out = Vec::new();
        for model in models {
            let model_id = model.id().to_owned();
            let (done, _) = self.already_done(study_uid, model).await?;
            if done {
                out.push(Recorded::AlreadyDone { model_id });
                continue;
            }
            let event = match self.infer(&plan, model).await {
                Outcome::NotApplicable => {
                    out.push(Recorded::NotApplicable { model_id });
                    continue;
                }
                Outcome::Findings { outcome, millis } => DiagnosisEvent::AiFindingsRecorded {
                    study_uid: study_uid.to_owned(),
                    model_id: model_id.clone(),
                    model_version: model.version().to_owned(),
                    findings: outcome.findings,
                    inference_ms: millis,
                    model_sha256: model.sha256.clone(),
                    slices: outcome.slices,
                },
                Outcome::Failed(reason) => DiagnosisEvent::AiInferenceFailed {
                    study_uid: study_uid.to_owned(),
                    model_id: model_id.clone(),
                    reason,
                    model_version: model.version().to_owned(),
                    model_sha256: model.sha256.clone(),
                },
            };
            if self.append_once(&plan, model, event.clone()).await? {
                self.count(model.id(), &event);
                out.push(match event {
                    DiagnosisEvent::AiFindingsRecorded { findings, .. } => Recorded::Findings {
                        model_id,
                        findings: findings.len(),
                    },
                    DiagnosisEvent::AiInferenceFailed { reason, .. } => {
                        Recorded::Failed { model_id, reason }
                    }
                    _ => Recorded::AlreadyDone { model_id },
                });
            } else {
                out.push(Recorded::AlreadyDone { model_id });
            }
        }
        Ok(out)
    }

    /// Appends `event` unless an outcome of the same model version got there first (another
    /// process, or a backfill racing the live service). Returns whether it appended.
    async fn append_once(
        &self,
        plan: &StudyPlan,
        model: &Model,
        event: DiagnosisEvent,
    ) -> Result<bool, StoreError> {
        let stream = StreamId::new(Family::Diagnosis, &plan.study_uid);
        let tenant = if plan.owner.is_empty() {
            "unknown"
        } else {
            &plan.owner
        };
        let meta = EventMetadata::new(tenant, format!("service:inference:{}", model.id()));
        for _ in 0..5 {
            let (done, version) = self.already_done(&plan.study_uid, model).await?;
            if done {
                return Ok(false);
            }
            match self
                .store
                .append(
                    &stream,
                    ExpectedVersion::Exact(version),
                    vec![HubEvent::from(event.clone()).to_new_event(meta.clone())],
                )
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Five conflicts in a row: others keep appending; the caller retries later.
        let (_, actual) = self.already_done(&plan.study_uid, model).await?;
        Err(StoreError::Conflict {
            stream,
            expected: ExpectedVersion::Any,
            actual,
        })
    }

    fn count(&self, model: &str, event: &DiagnosisEvent) {
        match event {
            DiagnosisEvent::AiFindingsRecorded {
                slices,
                inference_ms,
                ..
            } => {
                self.metrics
                    .outcomes
                    .with_label_values(&[model, "recorded"])
                    .inc();
                self.metrics
                    .slices
                    .with_label_values(&[model])
                    .inc_by(u64::from(*slices));
                self.metrics
                    .seconds
                    .with_label_values(&[model])
                    .observe(*inference_ms as f64 / 1000.0);
            }
            DiagnosisEvent::AiInferenceFailed { .. } => self
                .metrics
                .outcomes
                .with_label_values(&[model, "failed"])
                .inc(),
            _ => {}
        }
    }

    /// The models whose modality filter accepts one of the study's modalities.
    pub fn models_for(&self, modalities: &[String]) -> Vec<&Model> {
        self.registry.for_modalities(modalities)
    }

    /// Follows the log from the checkpoint in `checkpoint` (or from the head when there is none:
    /// past studies are `hub backfill`'s job) and handles each `StudyStabilized`, a few studies
    /// at once, until `stopped` turns true. The checkpoint moves past a study only once its
    /// outcomes are recorded, so a crash re-handles it (idempotently).
    pub async fn follow(
        self: Arc<Self>,
        checkpoint: &Path,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let start = match read_checkpoint(checkpoint) {
            Some(p) => p,
            None => {
                let head = self.store.head().await?;
                write_checkpoint(checkpoint, head);
                head
            }
        };
        let mut subscription = Subscription::new(self.store.clone(), start);
        let mut running = FuturesOrdered::new();
        loop {
            let room = self.concurrent_studies.saturating_sub(running.len());
            tokio::select! {
                batch = subscription.next_batch(room.max(1)), if room > 0 => {
                    for event in batch? {
                        if let Ok(HubEvent::Study(StudyEvent::StudyStabilized {
                            study_uid, modalities, ..
                        })) = HubEvent::decode(&event)
                        {
                            let this = self.clone();
                            running.push_back(async move {
                                this.handle(&study_uid, &modalities).await;
                                event.position
                            });
                        }
                    }
                    if running.is_empty() {
                        write_checkpoint(checkpoint, subscription.position());
                    }
                }
                Some(position) = running.next(), if !running.is_empty() => {
                    write_checkpoint(
                        checkpoint,
                        if running.is_empty() { subscription.position() } else { position },
                    );
                }
                _ = stopped.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    /// Handles one event delivered by a consumer group (the distributed mode): a
    /// `StudyStabilized` runs the matching models once; anything else is ignored. `Err` is a
    /// failure worth retrying (the store did not answer); model failures are outcomes already.
    pub async fn on_event(&self, event: &RecordedEvent) -> Result<(), String> {
        let Ok(HubEvent::Study(StudyEvent::StudyStabilized {
            study_uid,
            modalities,
            ..
        })) = HubEvent::decode(event)
        else {
            return Ok(());
        };
        let models = self.models_for(&modalities);
        if models.is_empty() {
            return Ok(());
        }
        let recorded = self
            .run_study(&study_uid, &models)
            .await
            .map_err(|e| format!("study {study_uid}: {e}"))?;
        for r in recorded {
            if let Recorded::Findings { model_id, findings } = r {
                tracing::info!(study = %study_uid, model = %model_id, findings, "AI findings recorded");
            }
        }
        Ok(())
    }

    async fn handle(&self, study_uid: &str, modalities: &[String]) {
        let models = self.models_for(modalities);
        if models.is_empty() {
            return;
        }
        for attempt in 1..=3 {
            match self.run_study(study_uid, &models).await {
                Ok(recorded) => {
                    for r in recorded {
                        match r {
                            Recorded::Findings { model_id, findings } => {
                                tracing::info!(study = %study_uid, model = %model_id, findings, "AI findings recorded")
                            }
                            Recorded::Failed { model_id, reason } => {
                                tracing::warn!(study = %study_uid, model = %model_id, %reason, "AI inference failed")
                            }
                            _ => {}
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(study = %study_uid, error = %e, attempt, "inference could not read or append; retrying");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
            }
        }
        tracing::error!(study = %study_uid, "inference gave up on this study; run `hub backfill --model ID` once the event store answers");
    }
}

/// Every event of one stream, in order.
async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Vec<hub_events::RecordedEvent>, StoreError> {
    let mut all = Vec::new();
    loop {
        let page = store
            .read_stream(stream, all.len() as u64 + 1, 1000)
            .await?;
        let full = page.len() == 1000;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

fn read_checkpoint(path: &Path) -> Option<Position> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_checkpoint(path: &Path, position: Position) {
    let tmp: PathBuf = path.with_extension("tmp");
    let written =
        std::fs::write(&tmp, position.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the inference checkpoint");
    }
}
