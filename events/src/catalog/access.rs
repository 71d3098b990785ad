//! Data access (audit) events: stream `access-<StudyInstanceUID>` (or `access-hub` for accesses
//! not tied to one study), ATNA-style: who, what, when, purpose, decision.

use serde::{Deserialize, Serialize};

use super::sharing::PurposeOfUse;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessAction {
    Query,
    RetrieveStudy,
    RetrieveSeries,
    RetrieveInstance,
    Metadata,
    Frames,
    Rendered,
    Thumbnail,
    ShareLink,
    BreakTheGlass,
    Findings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Permit,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccessEvent {
    DataAccessed {
        subject: String,
        role: String,
        institution: String,
        action: AccessAction,
        study_uid: Option<String>,
        series_uid: Option<String>,
        sop_instance_uid: Option<String>,
        purpose: PurposeOfUse,
        decision: Decision,
        /// Why it was denied, or the break-the-glass justification.
        reason: Option<String>,
    },
}
