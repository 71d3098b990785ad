//! Sharing events: shares (`share-<uuid>`) and patient consents (`consent-<uuid>`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who a share is granted to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Grantee {
    Institution(String),
    Alliance(String),
    /// One user: the subject of a token of one institution (ShareGranted schema v3). The same
    /// subject at another institution, or in a token of an institution nobody registered, is
    /// another user.
    User(UserId),
    /// A user grant recorded before grants named the user's institution (ShareGranted v1 and
    /// v2 stored `{"kind": "user", "id": "<subject>"}`). A bare subject names no one user (any
    /// institution's token may carry it), so such a grant reaches nobody: the owner grants
    /// again naming the institution. Never written any more; upcast from old events only.
    UnscopedUser(String),
}

/// A user, as a grant or a session names them: the institution whose token names the subject,
/// and that subject (for a patient, the regional patient id and the institution that issued
/// their login).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId {
    pub institution: String,
    pub subject: String,
}

/// What a share lets the grantee see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareScope {
    /// Study, series and instance attributes, no pixels.
    Metadata,
    /// Metadata and pixels.
    Images,
    /// A de-identified copy (PS3.15 Annex E) of metadata and pixels.
    Deidentified,
}

/// Why data is used (HL7 purpose-of-use, reduced to what the hub distinguishes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurposeOfUse {
    Treatment,
    Consultation,
    Emergency,
    Research,
    PatientRequest,
    Operations,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ShareEvent {
    /// Schema v2 added `purpose`; v1 events are upcast with purpose `treatment`, which is what
    /// every v1 share was granted for. Schema v3 names a user grantee by institution and
    /// subject ([`UserId`]); a v1 or v2 user grantee is upcast to [`Grantee::UnscopedUser`].
    ShareGranted {
        share_id: Uuid,
        study_uid: String,
        /// `None` shares the whole study.
        series_uid: Option<String>,
        owner: String,
        grantee: Grantee,
        scope: ShareScope,
        purpose: PurposeOfUse,
        expires_at: Option<DateTime<Utc>>,
    },
    ShareRevoked {
        share_id: Uuid,
        reason: String,
    },
    /// Appended when the expiry time has passed (the policy already refuses at expiry).
    ShareExpired {
        share_id: Uuid,
    },
}

/// What a consent decides: the documented list of consent policies (and nothing else is
/// recorded). Each decides alliance-wide visibility of the patient's studies at every
/// institution where they are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentPolicy {
    /// Members of an alliance of a study's owner see the study's metadata, and shares to such an
    /// alliance reach them (what every consent meant before the list existed).
    AllianceMetadata,
    /// The patient refuses alliance-wide visibility: while a refusal is active, no
    /// `alliance_metadata` consent of theirs counts (withdraw the refusal to lift it).
    Refused,
}

impl ConsentPolicy {
    pub const ALL: [ConsentPolicy; 2] = [ConsentPolicy::AllianceMetadata, ConsentPolicy::Refused];

    pub fn as_str(&self) -> &'static str {
        match self {
            ConsentPolicy::AllianceMetadata => "alliance_metadata",
            ConsentPolicy::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<ConsentPolicy> {
        ConsentPolicy::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// BPPC-style consent: a patient allows (or stops allowing) alliance-wide visibility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ConsentEvent {
    /// Schema v2 made `policy` one of [`ConsentPolicy`] and added `by_patient`. A v1 event held
    /// free text, which nothing read: every v1 consent granted alliance visibility. It is upcast
    /// to `refused` when its text says no (`no`, `none`, `refuse(d)`, `deny`, `denied`,
    /// `decline(d)`, `opt-out`, `opt_out`, `optout`, `withdrawn`, any case), else to
    /// `alliance_metadata`; the text is kept in `v1_policy_text`; v1 consents were all recorded by
    /// an institution's admin (`by_patient: false`). Whoever recorded it, a consent counts only
    /// when the patient recorded it or the institution had the patient linked when it was
    /// recorded, so the stored v1 consents of institutions that never linked the patient grant
    /// nothing.
    ConsentRecorded {
        consent_id: Uuid,
        regional_patient_id: String,
        /// The institution that recorded the consent (for a patient, the one that issued their
        /// login).
        institution_id: String,
        /// The patient recorded it themselves (else the institution did, on their behalf).
        by_patient: bool,
        policy: ConsentPolicy,
        /// The free text a schema v1 event held as its policy; `None` since v2.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v1_policy_text: Option<String>,
    },
    ConsentWithdrawn {
        consent_id: Uuid,
        regional_patient_id: String,
        reason: Option<String>,
    },
}
