//! Ingest: how studies get into the hub. DICOMweb STOW-RS requests are streamed part by part
//! into blob storage (`object_store`), each part's header is read (never its pixels), and the
//! study aggregate decides what is new; the study events are appended only after the blobs they
//! refer to are durable.
//!
//! Ingest stores the bytes received, as received; it never transcodes or rewrites originals.
//! It knows nothing of HTTP routing (the gateway calls it) or of read models.

pub mod blob;
pub mod dicom;
pub mod dimse;
pub mod intents;
pub mod stabilize;
pub mod stow;
pub mod study;

pub use blob::{BlobError, BlobStore};
pub use stow::{Ingest, StowError, StowRequest, StowResult};
