//! The envelope every event travels in: identity, stream, position and provenance.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A place in the global log. Position 1 is the first event; 0 means "before the first event",
/// so reading `after = 0` reads everything.
pub type Position = u64;

/// The aggregate families of the hub. A stream id is `<family>-<id>`, so the family of any stored
/// event is known from its stream id alone (and decoding needs nothing else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Study,
    Institution,
    Alliance,
    Patient,
    Share,
    Consent,
    Consult,
    Diagnosis,
    Access,
}

impl Family {
    pub const ALL: [Family; 9] = [
        Family::Study,
        Family::Institution,
        Family::Alliance,
        Family::Patient,
        Family::Share,
        Family::Consent,
        Family::Consult,
        Family::Diagnosis,
        Family::Access,
    ];

    /// The stream id prefix of this family.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Study => "study",
            Family::Institution => "institution",
            Family::Alliance => "alliance",
            Family::Patient => "patient",
            Family::Share => "share",
            Family::Consent => "consent",
            Family::Consult => "consult",
            Family::Diagnosis => "diagnosis",
            Family::Access => "access",
        }
    }

    fn from_prefix(prefix: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.prefix() == prefix)
    }
}

/// The id of a stream: one aggregate instance, such as one study or one share.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(s: String) -> Result<StreamId, InvalidStreamId> {
        StreamId::parse(&s)
    }
}

impl From<StreamId> for String {
    fn from(s: StreamId) -> String {
        s.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid stream id {0:?}: expected <family>-<id> with family one of study, institution, \
     alliance, patient, share, consent, consult, diagnosis, access"
)]
pub struct InvalidStreamId(pub String);

impl StreamId {
    pub fn new(family: Family, id: impl fmt::Display) -> StreamId {
        StreamId(format!("{}-{}", family.prefix(), id))
    }

    pub fn parse(s: &str) -> Result<StreamId, InvalidStreamId> {
        let (prefix, id) = s
            .split_once('-')
            .ok_or_else(|| InvalidStreamId(s.to_owned()))?;
        if Family::from_prefix(prefix).is_none() || id.is_empty() {
            return Err(InvalidStreamId(s.to_owned()));
        }
        Ok(StreamId(s.to_owned()))
    }

    pub fn family(&self) -> Family {
        self.0
            .split_once('-')
            .and_then(|(p, _)| Family::from_prefix(p))
            .expect("a StreamId is only built from a known family")
    }

    /// The aggregate id inside the family (for `study-1.2.3` this is `1.2.3`).
    pub fn id(&self) -> &str {
        self.0.split_once('-').map(|(_, id)| id).unwrap_or("")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who did it, for whom, and why: carried by every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The institution on whose behalf the event was appended (the tenant). Write predicates of
    /// read models include it. `hub` for the platform itself.
    pub tenant: String,
    /// The user or service that caused the event (`user:<id>`, `service:<name>`, `ae:<title>`).
    pub actor: String,
    /// Shared by every event of one business transaction, across services.
    pub correlation_id: Uuid,
    /// The event (or request) that directly caused this one.
    pub causation_id: Option<Uuid>,
}

impl EventMetadata {
    /// Metadata for a new business transaction started by `actor` on behalf of `tenant`.
    pub fn new(tenant: impl Into<String>, actor: impl Into<String>) -> EventMetadata {
        EventMetadata {
            tenant: tenant.into(),
            actor: actor.into(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
        }
    }

    /// Metadata for an event caused by `cause`: same correlation, causation = the cause's id.
    pub fn caused_by(cause: &RecordedEvent, actor: impl Into<String>) -> EventMetadata {
        EventMetadata {
            tenant: cause.metadata.tenant.clone(),
            actor: actor.into(),
            correlation_id: cause.metadata.correlation_id,
            causation_id: Some(cause.event_id),
        }
    }
}

/// An event ready to be appended: typed events become this through
/// [`HubEvent::to_new_event`](crate::HubEvent::to_new_event).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// The event's fields as a JSON object (without its type tag).
    pub payload: String,
    pub metadata: EventMetadata,
}

/// An event as stored: the envelope plus the undecoded payload. Decoding (with upcasting) is
/// [`HubEvent::decode`](crate::HubEvent::decode), so a reader never fails on an event it does not
/// understand; it gets an error naming the position instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: Position,
    pub event_id: Uuid,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: String,
    pub recorded_at: DateTime<Utc>,
    pub metadata: EventMetadata,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_id_names_its_family_and_id() {
        let s = StreamId::new(Family::Study, "1.2.840.1");
        assert_eq!(s.as_str(), "study-1.2.840.1");
        assert_eq!(s.family(), Family::Study);
        assert_eq!(s.id(), "1.2.840.1");
        assert_eq!(
            StreamId::parse("share-abc").map(|s| s.family()),
            Ok(Family::Share)
        );
    }

    #[test]
    fn an_unknown_family_or_empty_id_is_refused() {
        assert!(StreamId::parse("film-1").is_err());
        assert!(StreamId::parse("study-").is_err());
        assert!(StreamId::parse("study").is_err());
    }
}
