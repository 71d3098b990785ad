//! Consultation commands: authorize, validate, check the state and the calendar, append, wait
//! until the policy facts include the change.

use std::sync::Arc;
use std::time::Duration;

use hub_events::catalog::{
    AvailabilitySlot, ConsultEvent, ConsultKind, ConsultParticipant, ConsultUrgency,
};
use hub_events::{
    EventMetadata, EventStore, ExclusiveGuard, ExpectedVersion, Family, HubEvent, Position,
    StoreError, StreamId,
};
use hub_policies::{AccessControl, Act, ConsultState, Consultation, Role, Slot, StudyRef, Subject};
use serde::Deserialize;
use uuid::Uuid;

use crate::booking::{self, SlotError};
use crate::transitions::{self, Command};

#[derive(Debug, thiserror::Error)]
pub enum ConsultError {
    /// 400: `field` of the request is wrong, and why.
    #[error("{field}: {reason}")]
    BadRequest { field: String, reason: String },
    /// 403: the caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such consultation or report, or one the caller takes no part in.
    #[error("{0}")]
    NotFound(String),
    /// 409: the state refuses the command, or the slot is taken.
    #[error("{0}")]
    Conflict(String),
    /// 503: the log or the policy point cannot serve now.
    #[error("{0}")]
    Unavailable(String),
}

pub(crate) fn bad(field: &str, reason: impl Into<String>) -> ConsultError {
    ConsultError::BadRequest {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl From<StoreError> for ConsultError {
    fn from(e: StoreError) -> ConsultError {
        match e {
            StoreError::Conflict { .. } => ConsultError::Conflict(format!(
                "{e}; someone changed it at the same time, read it again and retry"
            )),
            e => ConsultError::Unavailable(format!("event store: {e}")),
        }
    }
}

impl From<hub_policies::PolicyError> for ConsultError {
    fn from(e: hub_policies::PolicyError) -> ConsultError {
        ConsultError::Unavailable(e.to_string())
    }
}

pub(crate) fn non_empty(field: &str, value: &str, max: usize) -> Result<(), ConsultError> {
    if value.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if value.len() > max || value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad(
            field,
            format!("must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, Deserialize)]
pub struct ParticipantRequest {
    pub user: String,
    pub institution: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ConsultRequest {
    pub study_uid: String,
    /// remote (default) | mdt
    #[serde(default)]
    pub kind: Option<String>,
    pub expert_institution: String,
    /// A registered expert of `expert_institution`; absent = the institution assigns one.
    #[serde(default)]
    pub expert: Option<String>,
    #[serde(default)]
    pub specialty: Option<String>,
    /// routine (default) | urgent | emergency
    #[serde(default)]
    pub urgency: Option<String>,
    pub question: String,
    #[serde(default)]
    pub participants: Vec<ParticipantRequest>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SlotRequest {
    /// RFC 3339 with an explicit offset.
    pub starts_at: String,
    pub ends_at: String,
    /// Why it moves (reschedule only).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct AcceptRequest {
    /// Who takes it, when the request named no expert (default: the caller).
    #[serde(default)]
    pub expert: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ReasonRequest {
    pub reason: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CompleteRequest {
    #[serde(default)]
    pub report_id: Option<Uuid>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AvailabilityRequest {
    pub starts_at: String,
    pub ends_at: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ExpertRequest {
    pub expert: String,
    #[serde(default)]
    pub specialty: Option<String>,
    #[serde(default)]
    pub availability: Vec<AvailabilityRequest>,
}

/// How long a command waits for its change to reach the policy facts before answering anyway.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Consults {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) access: Arc<AccessControl>,
    /// Held from the calendar check to the append being applied, so two bookings of one expert
    /// cannot both pass the check; with the store's exclusive section (`booking`) across
    /// processes too.
    booking: Arc<tokio::sync::Mutex<()>>,
    /// Position up to which the search index (the access projection) has applied the log.
    search_index: Option<tokio::sync::watch::Receiver<Position>>,
}

fn is_clinician(subject: &Subject) -> bool {
    matches!(subject.role, Role::Radiologist | Role::Physician)
}

impl Consults {
    pub fn new(store: Arc<dyn EventStore>, access: Arc<AccessControl>) -> Consults {
        Consults {
            store,
            access,
            booking: Arc::new(tokio::sync::Mutex::new(())),
            search_index: None,
        }
    }

    /// Commands also wait for the search index to reach what they appended, so a participant's
    /// next search shows the study.
    pub fn with_search_index(
        mut self,
        applied: tokio::sync::watch::Receiver<Position>,
    ) -> Consults {
        self.search_index = Some(applied);
        self
    }

    pub fn access(&self) -> &Arc<AccessControl> {
        &self.access
    }

    /// The booking section: this process's lock, then the log's exclusive section (other
    /// processes of a distributed hub book too), then the facts caught up with the whole log,
    /// so the calendar check sees every booking another process made before this one.
    async fn booking(
        &self,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, ExclusiveGuard), ConsultError> {
        let local = self.booking.clone().lock_owned().await;
        let global =
            self.store.exclusive("consult-booking").await.map_err(|e| {
                ConsultError::Unavailable(format!("cannot take the booking lock: {e}"))
            })?;
        let head = self.store.head().await?;
        if !self.access.wait_applied(head, VISIBILITY_WAIT).await {
            return Err(ConsultError::Unavailable(format!(
                "the calendars are not up to date with the log (position {head}) yet; try again"
            )));
        }
        Ok((local, global))
    }

    pub(crate) async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        subject: &Subject,
        events: Vec<HubEvent>,
    ) -> Result<Position, ConsultError> {
        let meta = EventMetadata::new(subject.institution.clone(), format!("user:{}", subject.id));
        let events = events
            .iter()
            .map(|e| e.to_new_event(meta.clone()))
            .collect();
        let appended = self.store.append(&stream, expected, events).await?;
        if !self
            .access
            .wait_applied(appended.last_position, VISIBILITY_WAIT)
            .await
        {
            tracing::warn!(
                position = appended.last_position,
                "the policy facts lag behind the log"
            );
        }
        if let Some(index) = &self.search_index {
            let mut index = index.clone();
            let position = appended.last_position;
            if tokio::time::timeout(VISIBILITY_WAIT, index.wait_for(|p| *p >= position))
                .await
                .is_err()
            {
                tracing::warn!(position, "the search index lags behind the log");
            }
        }
        Ok(appended.last_position)
    }

    /// A consultation `subject` takes part in or whose institution is a side of it.
    pub fn get(&self, subject: &Subject, id: Uuid) -> Result<Consultation, ConsultError> {
        let c = self
            .access
            .with_facts(|f| f.consults().consult(&id).cloned());
        match c {
            Some(c)
                if c.involves(subject)
                    || subject.institution == c.requesting_institution
                    || subject.institution == c.expert_institution
                    || c.owner.as_deref() == Some(subject.institution.as_str()) =>
            {
                Ok(c)
            }
            _ => Err(ConsultError::NotFound(format!("no consultation {id}"))),
        }
    }

    /// Declares an expert of the caller's institution (a hospital admin does).
    pub async fn register_expert(
        &self,
        subject: &Subject,
        req: ExpertRequest,
    ) -> Result<Position, ConsultError> {
        if subject.role != Role::HospitalAdmin {
            return Err(ConsultError::Forbidden(format!(
                "a {} may not declare experts (a hospital_admin of the expert's institution may)",
                subject.role
            )));
        }
        non_empty("expert", &req.expert, 256)?;
        if let Some(s) = &req.specialty {
            non_empty("specialty", s, 256)?;
        }
        let mut availability = Vec::new();
        for (n, a) in req.availability.iter().enumerate() {
            let (slot, _) = booking::parse_slot(&a.starts_at, &a.ends_at).map_err(|e| match e {
                SlotError::Bad { field, reason } => {
                    bad(&format!("availability[{n}].{field}"), reason)
                }
                other => bad("availability", format!("{other:?}")),
            })?;
            availability.push(AvailabilitySlot {
                starts_at: slot.starts_at,
                ends_at: slot.ends_at,
            });
        }
        self.append(
            StreamId::new(
                Family::Consult,
                format!("expert.{}.{}", subject.institution, req.expert),
            ),
            ExpectedVersion::Any,
            subject,
            vec![
                ConsultEvent::ExpertRegistered {
                    institution: subject.institution.clone(),
                    expert: req.expert,
                    specialty: req.specialty,
                    availability,
                }
                .into(),
            ],
        )
        .await
    }

    /// Asks for a consultation on `study` (which the caller resolved and may see); returns its id.
    pub async fn request(
        &self,
        subject: &Subject,
        study: Option<&StudyRef>,
        req: ConsultRequest,
    ) -> Result<Uuid, ConsultError> {
        if !is_clinician(subject) {
            return Err(ConsultError::Forbidden(format!(
                "a {} may not request a consultation (radiologists and physicians may)",
                subject.role
            )));
        }
        non_empty("study_uid", &req.study_uid, 64)?;
        let Some(study) = study.filter(|s| {
            self.access
                .decide(subject, s, None, Act::ReadMetadata)
                .is_ok_and(|d| d.permit)
        }) else {
            return Err(bad(
                "study_uid",
                format!("'{}' is not a study you can see", req.study_uid),
            ));
        };
        non_empty("question", &req.question, 4000)?;
        non_empty("expert_institution", &req.expert_institution, 256)?;
        let kind = match req.kind.as_deref() {
            None | Some("remote") => ConsultKind::Remote,
            Some("mdt") => ConsultKind::Mdt,
            Some(other) => {
                return Err(bad(
                    "kind",
                    format!("unknown value '{other}' (expected one of remote, mdt)"),
                ));
            }
        };
        let urgency = match req.urgency.as_deref() {
            None | Some("routine") => ConsultUrgency::Routine,
            Some("urgent") => ConsultUrgency::Urgent,
            Some("emergency") => ConsultUrgency::Emergency,
            Some(other) => {
                return Err(bad(
                    "urgency",
                    format!("unknown value '{other}' (expected one of routine, urgent, emergency)"),
                ));
            }
        };
        if let Some(s) = &req.specialty {
            non_empty("specialty", s, 256)?;
        }
        self.access.with_facts(|f| {
            if f.institution(&req.expert_institution).is_none() {
                return Err(bad(
                    "expert_institution",
                    format!("no institution '{}' is registered", req.expert_institution),
                ));
            }
            if let Some(expert) = &req.expert
                && f.consults()
                    .expert(&req.expert_institution, expert)
                    .is_none()
            {
                return Err(bad(
                    "expert",
                    format!(
                        "'{expert}' is not a registered expert of {}",
                        req.expert_institution
                    ),
                ));
            }
            for (n, p) in req.participants.iter().enumerate() {
                non_empty(&format!("participants[{n}].user"), &p.user, 256)?;
                if f.institution(&p.institution).is_none() {
                    return Err(bad(
                        &format!("participants[{n}].institution"),
                        format!("no institution '{}' is registered", p.institution),
                    ));
                }
            }
            Ok(())
        })?;
        if kind == ConsultKind::Remote && !req.participants.is_empty() {
            return Err(bad(
                "participants",
                "a remote consultation has one expert; ask for kind mdt to invite a team",
            ));
        }
        let mut participants: Vec<ConsultParticipant> = req
            .participants
            .into_iter()
            .map(|p| ConsultParticipant {
                user: p.user,
                institution: p.institution,
            })
            .collect();
        participants.sort();
        participants.dedup();
        let consult_id = Uuid::now_v7();
        self.append(
            StreamId::new(Family::Consult, consult_id),
            ExpectedVersion::NoStream,
            subject,
            vec![
                ConsultEvent::ConsultRequested {
                    consult_id,
                    study_uid: study.study_uid.clone(),
                    kind,
                    requesting_institution: subject.institution.clone(),
                    requested_by: subject.id.clone(),
                    expert_institution: req.expert_institution,
                    expert: req.expert,
                    question: req.question,
                    owner: Some(study.owner.clone()),
                    specialty: req.specialty,
                    urgency,
                    participants,
                }
                .into(),
            ],
        )
        .await?;
        Ok(consult_id)
    }

    /// The consultation, if `subject` may do `command` on it and its state allows it.
    fn for_command(
        &self,
        subject: &Subject,
        id: Uuid,
        command: Command,
    ) -> Result<Consultation, ConsultError> {
        let c = self.get(subject, id)?;
        let expert_side = subject.institution == c.expert_institution
            && (subject.role == Role::HospitalAdmin
                || c.expert.as_deref().is_none_or(|e| e == subject.id));
        let requester_side = subject.institution == c.requesting_institution
            && (subject.role == Role::HospitalAdmin || subject.id == c.requested_by);
        let allowed = match command {
            // Approving shares the owner's study with the participants: whoever may share it.
            Command::Approve => {
                let study = StudyRef {
                    owner: c.owner.clone().unwrap_or_default(),
                    study_uid: c.study_uid.clone(),
                    patient_id: None,
                };
                c.owner.is_some()
                    && self
                        .access
                        .decide(subject, &study, None, Act::Share)?
                        .permit
            }
            Command::Accept | Command::Decline | Command::Complete => expert_side,
            Command::Schedule | Command::Reschedule | Command::Cancel => {
                expert_side || requester_side
            }
        };
        if !allowed {
            return Err(ConsultError::Forbidden(format!(
                "{} of {} may not {} consultation {id}",
                subject.id,
                subject.institution,
                command.as_str()
            )));
        }
        if transitions::next(c.state, command).is_none() {
            return Err(ConsultError::Conflict(transitions::refusal(
                &id, c.state, command,
            )));
        }
        Ok(c)
    }

    /// Checks `slot` against every attendee's other bookings and the expert's availability.
    fn check_calendar(
        &self,
        c: &Consultation,
        attendees: &[ConsultParticipant],
        slot: &Slot,
    ) -> Result<(), ConsultError> {
        self.access.with_facts(|f| {
            for who in attendees {
                let booked = f
                    .consults()
                    .bookings_of(who)
                    .filter(|o| o.consult_id != c.consult_id)
                    .filter_map(|o| o.slot.map(|s| (o.consult_id, s)));
                let availability = f
                    .consults()
                    .expert(&who.institution, &who.user)
                    .map(|e| e.availability.clone())
                    .unwrap_or_default();
                match booking::check(slot, booked, &availability) {
                    Ok(()) => {}
                    Err(SlotError::Conflict(other)) => {
                        return Err(ConsultError::Conflict(format!(
                            "{} of {} is booked for consultation {other} at that time",
                            who.user, who.institution
                        )));
                    }
                    Err(SlotError::Unavailable) => {
                        return Err(ConsultError::Conflict(format!(
                            "{} of {} declared no availability covering that slot",
                            who.user, who.institution
                        )));
                    }
                    Err(SlotError::Bad { field, reason }) => return Err(bad(field, reason)),
                }
            }
            Ok(())
        })
    }

    fn slot(&self, req: &SlotRequest) -> Result<(Slot, String), ConsultError> {
        let (slot, zone) =
            booking::parse_slot(&req.starts_at, &req.ends_at).map_err(|e| match e {
                SlotError::Bad { field, reason } => bad(field, reason),
                other => bad("starts_at", format!("{other:?}")),
            })?;
        if slot.ends_at <= self.access.now() {
            return Err(bad("ends_at", format!("'{}' is in the past", req.ends_at)));
        }
        Ok((slot, zone))
    }

    /// Books (or, with `reschedule`, moves) the slot.
    pub async fn schedule(
        &self,
        subject: &Subject,
        id: Uuid,
        req: SlotRequest,
        reschedule: bool,
    ) -> Result<Position, ConsultError> {
        let command = if reschedule {
            Command::Reschedule
        } else {
            Command::Schedule
        };
        let (slot, zone) = self.slot(&req)?;
        let reason = if reschedule {
            let reason = req.reason.clone().unwrap_or_default();
            non_empty("reason", &reason, 1000)?;
            Some(reason)
        } else {
            None
        };
        let _booking = self.booking().await?;
        let c = self.for_command(subject, id, command)?;
        self.check_calendar(&c, &c.attendees(), &slot)?;
        let event = match reason {
            Some(reason) => ConsultEvent::ConsultRescheduled {
                consult_id: id,
                starts_at: slot.starts_at,
                ends_at: slot.ends_at,
                reason,
                time_zone: Some(zone),
            },
            None => ConsultEvent::ConsultScheduled {
                consult_id: id,
                starts_at: slot.starts_at,
                ends_at: slot.ends_at,
                time_zone: Some(zone),
            },
        };
        self.append_to(subject, &c, event).await
    }

    async fn append_to(
        &self,
        subject: &Subject,
        c: &Consultation,
        event: ConsultEvent,
    ) -> Result<Position, ConsultError> {
        self.append(
            StreamId::new(Family::Consult, c.consult_id),
            ExpectedVersion::Exact(c.version),
            subject,
            vec![event.into()],
        )
        .await
    }

    /// The expert accepts the booked slot (naming who takes it when the request did not).
    pub async fn accept(
        &self,
        subject: &Subject,
        id: Uuid,
        req: AcceptRequest,
    ) -> Result<Position, ConsultError> {
        let _booking = self.booking().await?;
        let c = self.for_command(subject, id, Command::Accept)?;
        let expert = match (&c.expert, req.expert) {
            (Some(named), Some(other)) if *named != other => {
                return Err(bad(
                    "expert",
                    format!("consultation {id} is for {named}, not {other}"),
                ));
            }
            (Some(named), _) => named.clone(),
            (None, Some(e)) => e,
            (None, None) => subject.id.clone(),
        };
        if c.expert.is_none() {
            if self.access.with_facts(|f| {
                f.consults()
                    .expert(&c.expert_institution, &expert)
                    .is_none()
            }) {
                return Err(bad(
                    "expert",
                    format!(
                        "'{expert}' is not a registered expert of {}",
                        c.expert_institution
                    ),
                ));
            }
            // The slot now books the named expert's time too.
            let who = ConsultParticipant {
                user: expert.clone(),
                institution: c.expert_institution.clone(),
            };
            if let Some(slot) = c.slot {
                self.check_calendar(&c, &[who], &slot)?;
            }
        }
        self.append_to(
            subject,
            &c,
            ConsultEvent::ConsultAccepted {
                consult_id: id,
                expert,
            },
        )
        .await
    }

    pub async fn decline(
        &self,
        subject: &Subject,
        id: Uuid,
        req: ReasonRequest,
    ) -> Result<Position, ConsultError> {
        self.close(subject, id, Command::Decline, req).await
    }

    /// The owner approves a consultation another institution requested on its study: its
    /// window then opens the study to every participant.
    pub async fn approve(&self, subject: &Subject, id: Uuid) -> Result<Position, ConsultError> {
        let c = self.for_command(subject, id, Command::Approve)?;
        if c.owner_consents() {
            return Err(ConsultError::Conflict(match &c.approved_by {
                Some(by) => format!("consultation {id} was approved by {by} already"),
                None => format!(
                    "consultation {id} was requested by the study's owner: it needs no approval"
                ),
            }));
        }
        self.append_to(
            subject,
            &c,
            ConsultEvent::ConsultApproved {
                consult_id: id,
                approved_by: subject.id.clone(),
                institution: subject.institution.clone(),
            },
        )
        .await
    }

    pub async fn cancel(
        &self,
        subject: &Subject,
        id: Uuid,
        req: ReasonRequest,
    ) -> Result<Position, ConsultError> {
        self.close(subject, id, Command::Cancel, req).await
    }

    /// Declines or cancels, with the reason the event keeps.
    async fn close(
        &self,
        subject: &Subject,
        id: Uuid,
        command: Command,
        req: ReasonRequest,
    ) -> Result<Position, ConsultError> {
        non_empty("reason", &req.reason, 1000)?;
        let c = self.for_command(subject, id, command)?;
        let event = if command == Command::Decline {
            ConsultEvent::ConsultDeclined {
                consult_id: id,
                expert: c.expert.clone().unwrap_or_else(|| subject.id.clone()),
                reason: req.reason,
            }
        } else {
            ConsultEvent::ConsultCancelled {
                consult_id: id,
                reason: req.reason,
            }
        };
        self.append_to(subject, &c, event).await
    }

    pub async fn complete(
        &self,
        subject: &Subject,
        id: Uuid,
        req: CompleteRequest,
    ) -> Result<Position, ConsultError> {
        let c = self.for_command(subject, id, Command::Complete)?;
        self.append_to(
            subject,
            &c,
            ConsultEvent::ConsultCompleted {
                consult_id: id,
                report_id: req.report_id,
            },
        )
        .await
    }

    /// Consultations of `institution`: those it asked for (`outgoing`) or was asked (incoming).
    pub fn queue(&self, institution: &str, outgoing: bool) -> Vec<Consultation> {
        let mut list: Vec<Consultation> = self.access.with_facts(|f| {
            f.consults()
                .all()
                .filter(|c| {
                    if outgoing {
                        c.requesting_institution == institution
                    } else {
                        c.expert_institution == institution
                    }
                })
                .cloned()
                .collect()
        });
        list.sort_by_key(|c| (c.requested_at, c.consult_id));
        list
    }

    /// An expert's booked consultations, by start.
    pub fn calendar(&self, institution: &str, expert: &str) -> Vec<Consultation> {
        let who = ConsultParticipant {
            user: expert.to_owned(),
            institution: institution.to_owned(),
        };
        let mut list: Vec<Consultation> = self
            .access
            .with_facts(|f| f.consults().bookings_of(&who).cloned().collect());
        list.sort_by_key(|c| (c.slot.map(|s| s.starts_at), c.consult_id));
        list
    }

    /// Every consultation (for turnaround statistics: no patient data in them).
    pub fn all(&self) -> Vec<Consultation> {
        self.access
            .with_facts(|f| f.consults().all().cloned().collect())
    }

    pub fn state_of(&self, id: &Uuid) -> Option<ConsultState> {
        self.access
            .with_facts(|f| f.consults().consult(id).map(|c| c.state))
    }
}
