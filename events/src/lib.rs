//! The heart of the hub: the event catalog, the event store and the in-process transport.
//!
//! - [`catalog`]: every event of the hub as typed serde enums per aggregate family, with
//!   encoding, decoding and upcasting of old schema versions.
//! - [`envelope`]: the envelope every stored event carries (id, stream, version, position,
//!   time, tenant, actor, correlation and causation).
//! - [`store`]: the [`EventStore`] trait with its SQLite and PostgreSQL implementations.
//! - [`kafka`]: the distributed transport: the outbox relay to Kafka, the ordered live feed
//!   from Kafka into the local bus, and consumer groups with a dead-letter topic.
//! - [`bus`] and [`subscription`]: push delivery of committed events to in-process subscribers,
//!   catch-up first, exactly once, in global order.
//!
//! This crate knows nothing of read models, HTTP or DICOM; those build on it.

pub mod bus;
pub mod catalog;
pub mod envelope;
pub mod kafka;
pub mod metrics;
pub mod store;
pub mod subscription;

pub use bus::{Bus, BusMessage};
pub use catalog::{DecodeError, HubEvent};
pub use envelope::{EventMetadata, Family, NewEvent, Position, RecordedEvent, StreamId};
pub use metrics::StoreMetrics;
pub use store::postgres::PostgresEventStore;
pub use store::sqlite::{SqliteEventStore, SqliteSync};
pub use store::{AppendResult, EventStore, ExclusiveGuard, ExpectedVersion, StoreError};
pub use subscription::Subscription;
