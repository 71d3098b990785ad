//! Prometheus metrics of the inference service (AI throughput on the commission's dashboards
//! needs no patient data: model, outcome, counts and times).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct InferenceMetrics {
    /// Outcomes recorded, per model and outcome (`recorded`, `failed`).
    pub outcomes: IntCounterVec,
    /// Slices scored, per model.
    pub slices: IntCounterVec,
    /// Wall time of one model over one study, per model.
    pub seconds: HistogramVec,
}

impl InferenceMetrics {
    pub fn new(registry: &Registry) -> Result<InferenceMetrics, prometheus::Error> {
        let m = InferenceMetrics {
            outcomes: IntCounterVec::new(
                Opts::new(
                    "hub_inference_outcomes_total",
                    "AI outcomes appended to diagnosis streams, per model and outcome",
                ),
                &["model", "outcome"],
            )?,
            slices: IntCounterVec::new(
                Opts::new("hub_inference_slices_total", "Slices scored, per model"),
                &["model"],
            )?,
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "hub_inference_study_seconds",
                    "Time of one model over one study (read, decode, preprocess, run)",
                )
                .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0]),
                &["model"],
            )?,
        };
        registry.register(Box::new(m.outcomes.clone()))?;
        registry.register(Box::new(m.slices.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        Ok(m)
    }

    pub fn unregistered() -> InferenceMetrics {
        match InferenceMetrics::new(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("a fresh registry has no name clashes: {e}"),
        }
    }
}
