//! Prometheus metrics of the event store, registered into the registry the caller owns.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct StoreMetrics {
    /// Events appended, by aggregate family.
    pub events_appended: IntCounterVec,
    /// Append transactions that failed on a version conflict.
    pub append_conflicts: prometheus::IntCounter,
    /// Position of the last committed event.
    pub head_position: IntGauge,
    /// Seconds per append transaction.
    pub append_seconds: Histogram,
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> Result<StoreMetrics, prometheus::Error> {
        let m = StoreMetrics {
            events_appended: IntCounterVec::new(
                Opts::new("hub_events_appended_total", "Events appended to the log"),
                &["family"],
            )?,
            append_conflicts: prometheus::IntCounter::new(
                "hub_append_conflicts_total",
                "Appends refused because the stream was not at the expected version",
            )?,
            head_position: IntGauge::new(
                "hub_log_head_position",
                "Global position of the last event committed by this process",
            )?,
            append_seconds: Histogram::with_opts(
                HistogramOpts::new("hub_append_seconds", "Duration of append transactions")
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            )?,
        };
        for family in crate::Family::ALL {
            // Every family shows up from the first scrape, at 0.
            m.events_appended.with_label_values(&[family.prefix()]);
        }
        registry.register(Box::new(m.events_appended.clone()))?;
        registry.register(Box::new(m.append_conflicts.clone()))?;
        registry.register(Box::new(m.head_position.clone()))?;
        registry.register(Box::new(m.append_seconds.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (benchmarks and tests that do not scrape).
    pub fn unregistered() -> StoreMetrics {
        match StoreMetrics::new(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("a fresh registry has no name clashes: {e}"),
        }
    }

    pub(crate) fn record_append(&self, events: &[crate::RecordedEvent], seconds: f64) {
        for e in events {
            self.events_appended
                .with_label_values(&[e.stream_id.family().prefix()])
                .inc();
        }
        if let Some(last) = events.last() {
            self.head_position.set(last.position as i64);
        }
        self.append_seconds.observe(seconds);
    }
}
