//! The bounded worker pool: a fixed number of OS threads, each with its own ONNX Runtime sessions
//! (opened on first use of a model), fed from one bounded queue. A producer that finds the queue
//! full waits (backpressure), so a burst of studies never holds more than `queue` jobs of pixels
//! in memory besides the ones being worked on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hub_events::catalog::Finding;
use tokio::sync::{mpsc, oneshot};

use crate::manifest::Model;
use crate::outputs::{SliceRef, decode as decode_output};
use crate::pixels;
use crate::preprocess::{Slice, write_slot};
use crate::runtime::{ModelSession, Runtime};

/// One stored instance to score.
#[derive(Clone, Debug)]
pub struct InstanceBytes {
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub bytes: Bytes,
}

/// What a job gave: its findings and how many slices it scored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobOutcome {
    pub findings: Vec<Finding>,
    pub slices: u32,
}

struct Job {
    model: Arc<Model>,
    instances: Vec<InstanceBytes>,
    reply: oneshot::Sender<Result<JobOutcome, String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads (each runs one batch at a time).
    pub workers: usize,
    /// Jobs waiting at most; a submit beyond it waits.
    pub queue: usize,
    /// ONNX Runtime intra-op threads per worker.
    pub threads_per_worker: usize,
}

/// A handle to the pool; cloning shares it. The workers stop when the last handle is dropped.
#[derive(Clone)]
pub struct WorkerPool {
    tx: mpsc::Sender<Job>,
    config: PoolConfig,
}

impl WorkerPool {
    pub fn start(runtime: Runtime, config: PoolConfig) -> Result<WorkerPool, String> {
        let (tx, rx) = mpsc::channel::<Job>(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..config.workers.max(1) {
            let (rx, runtime) = (rx.clone(), runtime.clone());
            std::thread::Builder::new()
                .name(format!("inference-{n}"))
                .spawn(move || worker(runtime, rx, config.threads_per_worker))
                .map_err(|e| format!("cannot start inference worker {n}: {e}"))?;
        }
        Ok(WorkerPool { tx, config })
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// Queues a job, waiting while the queue is full; the receiver gives its outcome.
    pub async fn submit(
        &self,
        model: Arc<Model>,
        instances: Vec<InstanceBytes>,
    ) -> Result<oneshot::Receiver<Result<JobOutcome, String>>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                model,
                instances,
                reply,
            })
            .await
            .map_err(|_| "the inference workers have stopped".to_string())?;
        Ok(rx)
    }
}

fn worker(runtime: Runtime, rx: Arc<Mutex<mpsc::Receiver<Job>>>, threads: usize) {
    let mut sessions: HashMap<(String, String, String), ModelSession> = HashMap::new();
    loop {
        let job = {
            let mut rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.blocking_recv()
        };
        let Some(job) = job else { return };
        let key = (
            job.model.id().to_owned(),
            job.model.version().to_owned(),
            job.model.sha256.clone(),
        );
        let outcome = match sessions.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => run_job(e.into_mut(), &job.instances),
            std::collections::hash_map::Entry::Vacant(v) => {
                match runtime.session(&job.model, threads) {
                    Ok(s) => run_job(v.insert(s), &job.instances),
                    Err(e) => Err(e),
                }
            }
        };
        // The submitter may have gone (shutdown): nothing to tell then.
        let _ = job.reply.send(outcome);
    }
}

/// Decodes, preprocesses and scores the instances of one job, in batches of the model's size.
pub fn run_job(
    session: &mut ModelSession,
    instances: &[InstanceBytes],
) -> Result<JobOutcome, String> {
    let manifest = session.model.manifest.clone();
    let (input, pre) = (&manifest.input, &manifest.preprocess);
    let mut outcome = JobOutcome::default();
    let mut pending: Vec<(SliceRef, Slice)> = Vec::with_capacity(input.batch);
    let mut flush = |pending: &mut Vec<(SliceRef, Slice)>, outcome: &mut JobOutcome| {
        if pending.is_empty() {
            return Ok(());
        }
        let n = pending.len();
        let per = input.channels * input.height * input.width;
        let mut batch = vec![0f32; n * per];
        for (i, (_, slice)) in pending.iter().enumerate() {
            write_slot(&mut batch, i, slice, input, pre);
        }
        let (shape, data) = session.run(n, batch)?;
        let refs: Vec<SliceRef> = pending.drain(..).map(|(r, _)| r).collect();
        let found = decode_output(&manifest.output, &shape, &data, &refs)?;
        outcome.findings.extend(found);
        outcome.slices += n as u32;
        Ok::<(), String>(())
    };
    for instance in instances {
        let slices = pixels::decode(&instance.bytes, pre.rescale, input.max_slices)
            .map_err(|e| format!("instance {}: {e}", instance.sop_instance_uid))?;
        for (frame, slice) in slices {
            pending.push((
                SliceRef {
                    series_uid: instance.series_uid.clone(),
                    sop_instance_uid: instance.sop_instance_uid.clone(),
                    frame,
                    width: slice.width,
                    height: slice.height,
                },
                slice,
            ));
            if pending.len() >= input.batch {
                flush(&mut pending, &mut outcome)?;
            }
        }
    }
    flush(&mut pending, &mut outcome)?;
    Ok(outcome)
}
