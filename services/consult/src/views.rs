//! What the consultations add up to: turnaround (request → first signed report) per
//! consultation and per requesting institution, and the Prometheus gauges of the same. No
//! patient data: consultations are counted, never listed, in the metrics.

use std::collections::BTreeMap;

use hub_policies::Consultation;
use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;

/// Turnaround of one institution's requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Turnaround {
    pub institution: String,
    pub requested: u64,
    /// Requests answered by a signed report.
    pub reported: u64,
    pub mean_seconds: Option<f64>,
    pub max_seconds: Option<i64>,
}

/// Per requesting institution, by institution id.
pub fn turnaround_by_institution(consults: &[Consultation]) -> Vec<Turnaround> {
    let mut by: BTreeMap<&str, (Turnaround, i64)> = BTreeMap::new();
    for c in consults {
        let (t, sum) = by
            .entry(c.requesting_institution.as_str())
            .or_insert_with(|| {
                (
                    Turnaround {
                        institution: c.requesting_institution.clone(),
                        ..Turnaround::default()
                    },
                    0,
                )
            });
        t.requested += 1;
        if let Some(s) = c.turnaround_seconds() {
            t.reported += 1;
            *sum += s;
            t.max_seconds = Some(t.max_seconds.map_or(s, |m| m.max(s)));
        }
    }
    by.into_values()
        .map(|(mut t, sum)| {
            if t.reported > 0 {
                t.mean_seconds = Some(sum as f64 / t.reported as f64);
            }
            t
        })
        .collect()
}

/// The consultation gauges, refreshed from the facts when `/metrics` is scraped.
#[derive(Clone)]
pub struct ConsultMetrics {
    consults: IntGaugeVec,
    turnaround_mean: GaugeVec,
    turnaround_max: GaugeVec,
}

impl ConsultMetrics {
    pub fn new(registry: &Registry) -> Result<ConsultMetrics, prometheus::Error> {
        let m = ConsultMetrics {
            consults: IntGaugeVec::new(
                Opts::new(
                    "hub_consults",
                    "Consultations by requesting institution, expert institution and state",
                ),
                &["institution", "expert_institution", "state"],
            )?,
            turnaround_mean: GaugeVec::new(
                Opts::new(
                    "hub_consult_turnaround_seconds_mean",
                    "Mean time from a consultation request to its first signed report, per requesting institution",
                ),
                &["institution"],
            )?,
            turnaround_max: GaugeVec::new(
                Opts::new(
                    "hub_consult_turnaround_seconds_max",
                    "Longest time from a consultation request to its first signed report, per requesting institution",
                ),
                &["institution"],
            )?,
        };
        registry.register(Box::new(m.consults.clone()))?;
        registry.register(Box::new(m.turnaround_mean.clone()))?;
        registry.register(Box::new(m.turnaround_max.clone()))?;
        Ok(m)
    }

    pub fn refresh(&self, consults: &[Consultation]) {
        self.consults.reset();
        for c in consults {
            self.consults
                .with_label_values(&[
                    c.requesting_institution.as_str(),
                    c.expert_institution.as_str(),
                    c.state.as_str(),
                ])
                .inc();
        }
        self.turnaround_mean.reset();
        self.turnaround_max.reset();
        for t in turnaround_by_institution(consults) {
            if let (Some(mean), Some(max)) = (t.mean_seconds, t.max_seconds) {
                self.turnaround_mean
                    .with_label_values(&[t.institution.as_str()])
                    .set(mean);
                self.turnaround_max
                    .with_label_values(&[t.institution.as_str()])
                    .set(max as f64);
            }
        }
    }
}
