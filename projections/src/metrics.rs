//! Prometheus metrics of the projections.

use hub_events::Position;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ProjectionMetrics {
    /// Position each projection has applied.
    pub position: IntGaugeVec,
    /// Events between the head of the log and each projection (refreshed at scrape time).
    pub lag: IntGaugeVec,
    /// Events applied, per projection.
    pub applied: IntCounterVec,
    /// Events a projection could not decode and recorded as dead letters.
    pub dead_letters: IntCounterVec,
}

impl ProjectionMetrics {
    pub fn new(registry: &Registry) -> Result<ProjectionMetrics, prometheus::Error> {
        let m = ProjectionMetrics {
            position: IntGaugeVec::new(
                Opts::new(
                    "hub_projection_position",
                    "Log position the projection has applied",
                ),
                &["projection"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "hub_projection_lag_events",
                    "Events appended to the log that the projection has not applied yet",
                ),
                &["projection"],
            )?,
            applied: IntCounterVec::new(
                Opts::new(
                    "hub_projection_events_applied_total",
                    "Events applied by the projection",
                ),
                &["projection"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "hub_projection_dead_letters_total",
                    "Events the projection could not decode (recorded with their position)",
                ),
                &["projection"],
            )?,
        };
        registry.register(Box::new(m.position.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        Ok(m)
    }

    pub fn unregistered() -> ProjectionMetrics {
        match ProjectionMetrics::new(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("a fresh registry has no name clashes: {e}"),
        }
    }

    /// Sets every projection's lag from the current head of the log.
    pub fn refresh_lag(&self, head: Position, projections: &[&str]) {
        for name in projections {
            let applied = self.position.with_label_values(&[name]).get();
            self.lag
                .with_label_values(&[name])
                .set((head as i64 - applied).max(0));
        }
    }
}
