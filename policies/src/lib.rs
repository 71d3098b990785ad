//! Who may do what with which study: the Casbin model and policy in `policies/` (rules only),
//! the access facts they are evaluated on (an in-memory index projected from registry, sharing,
//! consent and break-the-glass events), and the one decision function every authorization point
//! calls.
//!
//! - [`facts`]: the live facts, applied event by event; answers "what relates this caller to this
//!   study" in time independent of the number of grants.
//! - [`engine`]: the Casbin enforcer over `model.conf` and `policy.csv`, and [`engine::Engine::decide`].
//! - [`live`]: [`AccessControl`], the engine plus facts that follow the log, at an injectable clock.
//!
//! This crate decides; it does not authenticate (the gateway verifies tokens), does not filter
//! search results in SQL (the access projection does, with the relations [`engine::Engine`]
//! says a role may use), and does not write audit events (the caller does).

pub mod consults;
pub mod engine;
pub mod facts;
pub mod live;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use engine::{Decision, Engine, PolicyError, View};

pub use consults::{ConsultFacts, ConsultState, Consultation, Expert, Slot};
pub use facts::{Facts, Relations};
pub use live::{AccessControl, Clock};

/// The Casbin model, compiled into the binary so a hub never runs without its rules.
pub const MODEL: &str = include_str!("../model.conf");
/// The Casbin policy: rules per role and relation, never per share.
pub const POLICY: &str = include_str!("../policy.csv");

/// The roles a token may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    HospitalAdmin,
    Radiologist,
    Physician,
    Patient,
    CommissionAnalyst,
    AiService,
    HubAdmin,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::HospitalAdmin,
        Role::Radiologist,
        Role::Physician,
        Role::Patient,
        Role::CommissionAnalyst,
        Role::AiService,
        Role::HubAdmin,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::HospitalAdmin => "hospital_admin",
            Role::Radiologist => "radiologist",
            Role::Physician => "physician",
            Role::Patient => "patient",
            Role::CommissionAnalyst => "commission_analyst",
            Role::AiService => "ai_service",
            Role::HubAdmin => "hub_admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role '{0}' (expected one of hospital_admin, radiologist, physician, patient, commission_analyst, ai_service, hub_admin)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The caller, as its verified token names it. For a patient, `id` is the regional patient id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subject {
    pub id: String,
    pub role: Role,
    pub institution: String,
}

/// The study an action is about: who owns it and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StudyRef {
    pub owner: String,
    pub study_uid: String,
    /// The owner's local Patient ID, as the catalog holds it (links map it to a regional id).
    pub patient_id: Option<String>,
}

/// What the caller wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    ReadMetadata,
    ReadImages,
    ReadDeidentified,
    Store,
    Share,
    BreakGlass,
    ReadAudit,
    ManagePatients,
    ManageRegistry,
    WriteFindings,
    ReadEventLog,
}

impl Act {
    pub const ALL: [Act; 11] = [
        Act::ReadMetadata,
        Act::ReadImages,
        Act::ReadDeidentified,
        Act::Store,
        Act::Share,
        Act::BreakGlass,
        Act::ReadAudit,
        Act::ManagePatients,
        Act::ManageRegistry,
        Act::WriteFindings,
        Act::ReadEventLog,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Act::ReadMetadata => "read_metadata",
            Act::ReadImages => "read_images",
            Act::ReadDeidentified => "read_deidentified",
            Act::Store => "store",
            Act::Share => "share",
            Act::BreakGlass => "break_glass",
            Act::ReadAudit => "read_audit",
            Act::ManagePatients => "manage_patients",
            Act::ManageRegistry => "manage_registry",
            Act::WriteFindings => "write_findings",
            Act::ReadEventLog => "read_event_log",
        }
    }
}

/// The ways a caller can be related to a study; the policy names them in its second column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Any,
    Own,
    Alliance,
    GrantMetadata,
    GrantImages,
    GrantDeidentified,
    Consult,
    Patient,
    BreakGlass,
}

impl Relation {
    pub const ALL: [Relation; 9] = [
        Relation::Any,
        Relation::Own,
        Relation::Alliance,
        Relation::GrantMetadata,
        Relation::GrantImages,
        Relation::GrantDeidentified,
        Relation::Consult,
        Relation::Patient,
        Relation::BreakGlass,
    ];
}
