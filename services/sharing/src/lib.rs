//! The sharing service: the commands that change who may see what. It registers institutions
//! and alliances, links patients (under a keyed hash of the national id, never the id itself),
//! records and withdraws consents, grants and revokes shares, opens break-the-glass sessions and
//! appends `ShareExpired` when a share's time has passed.
//!
//! Every command is authorized by the policy point ([`hub_policies::AccessControl`]), validated
//! (a bad field is a [`SharingError::BadRequest`] naming it), appended, and returns once the
//! policy facts and the search index include it, so the caller's next request sees the change.
//! It does not resolve which institution holds a study (the caller passes a [`StudyRef`] it read
//! from the catalog) and does not serve HTTP (the gateway does).

pub mod commands;
pub mod patient_key;

pub use commands::{
    AllianceRequest, BreakGlassRequest, GrantRequest, InstitutionRequest, LinkRequest, Sharing,
    SharingError,
};
pub use hub_policies::StudyRef;
pub use patient_key::PatientKey;
