//! Read models projected from the event log, and the runner that keeps them current.
//!
//! - [`runner`]: applies events to a read model in batches and records the position it has
//!   applied **in the same transaction** as the read-model change, so redelivery never applies an
//!   event twice; rebuild is drop-and-replay.
//! - [`db`]: the read-model database (SQLite in the embedded mode) with checkpoints and the
//!   dead letters of events that could not be decoded.
//! - [`study_catalog`]: the study catalog per institution, from study events.
//! - [`access`]: the access index (institutions, alliances, links, consents, shares,
//!   break-the-glass, consult windows) and [`visibility`], the policy filter of searches as an index join.
//! - [`audit`]: the audit trail, from data-access events: who saw which study.
//! - [`findings`]: AI findings per study and model version, from diagnosis events.
//!
//! A projection never writes to the event log and never calls a service: it only turns events
//! into rows. Anything it shows can be dropped and rebuilt from the log.

pub mod access;
pub mod audit;
mod consult_windows;
pub mod db;
pub mod findings;
pub mod metrics;
pub mod runner;
pub mod sql;
pub mod study_catalog;
pub mod visibility;

pub use access::AccessIndex;
pub use audit::{AUDIT_GATHER, AuditTrail};
pub use db::{Part, ReadModelDb, audit_file};
pub use findings::Findings;
pub use metrics::ProjectionMetrics;
pub use runner::{Projection, ProjectionError, ProjectionRunner, create_tables, rebuild};
pub use study_catalog::{DEEP_OFFSET, SeriesQuery, StudyCatalog, StudyQuery};
pub use visibility::Viewer;

/// Every read model of the hub, in the order `hub replay` rebuilds them.
pub fn all_projections() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(StudyCatalog),
        std::sync::Arc::new(AccessIndex),
        std::sync::Arc::new(AuditTrail),
        std::sync::Arc::new(Findings),
    ]
}
