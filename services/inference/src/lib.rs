//! AI inference over study events.
//!
//! - [`manifest`]: the model registry, a folder of TOML manifests (ONNX file, series filter,
//!   preprocessing, output decoding, thresholds); adding a model is adding a manifest.
//! - [`pixels`]: stored Part 10 bytes to greyscale slices with dicom-pixeldata.
//! - [`preprocess`]: slices to an input tensor (resize, window or normalization, layout).
//! - [`outputs`]: an output tensor to findings (classes, slice scores, heatmap boxes).
//! - [`metrics`]: Prometheus counters and times per model.
//! - [`runtime`]: ONNX Runtime loaded at run time (`ort`, `load-dynamic`).
//! - [`pool`]: the bounded worker pool with backpressure.
//! - [`service`]: reacting to `StudyStabilized`, idempotent appends to `diagnosis-<StudyUID>`,
//!   and the single-study runs `hub backfill` and `hub bench inference` use.
//! - [`synthetic`]: a synthetic head CT series (for tests and the benchmark).
//!
//! This crate reads the log and the blob store and appends diagnosis events; it serves no HTTP,
//! writes no read model and decides no access (the gateway and projections do).

pub mod manifest;
pub mod metrics;
pub mod outputs;
pub mod pixels;
pub mod pool;
pub mod preprocess;
pub mod runtime;
pub mod service;
pub mod synthetic;

pub use manifest::{Manifest, Model, Registry};
pub use metrics::InferenceMetrics;
pub use pool::{PoolConfig, WorkerPool};
pub use runtime::Runtime;
pub use service::{Inference, Outcome, Recorded, StudyPlan};
