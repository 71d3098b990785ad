//! The application layer: the hub's use cases, called by every surface (the HTTP gateway, DIMSE,
//! and the pages to come), so that a rule is enforced in one place and never copied into a
//! handler.
//!
//! Today it owns the policy-filtered search ([`search`]): which studies, series and instances a
//! caller is shown, in which view (full or de-identified), matched only on what that view shows.
//! The surfaces turn its rows into DICOM JSON, REST rows or C-FIND responses, and audit what they
//! showed.
//!
//! It decides nothing itself: decisions come from the policy point ([`hub_policies`]), rows from
//! the read models ([`hub_projections`]), de-identified values from [`hub_deid`]. It does not know
//! HTTP or DICOM networking.

pub mod search;

pub use search::{SearchError, Searcher, Shown};
