//! Sharing commands: authorize, validate, append, wait until visible.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hub_events::catalog::{
    AccessAction, AccessEvent, AllianceEvent, ConsentEvent, ConsentPolicy,
    Decision as AccessDecision, Grantee, InstitutionEvent, InstitutionKind, PatientEvent,
    PurposeOfUse, ShareEvent, ShareScope, UserId,
};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, Position, StoreError, StreamId,
};
use hub_policies::facts::Consent;
use hub_policies::{AccessControl, Act, Role, StudyRef, Subject};
use serde::Deserialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::patient_key::PatientKey;

#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    /// 400: `field` of the request is wrong, and why.
    #[error("{field}: {reason}")]
    BadRequest { field: String, reason: String },
    /// 403: the caller may not do this (only where saying so leaks nothing).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing, or one the caller may not know about.
    #[error("{0}")]
    NotFound(String),
    /// 409: it already exists, or it is in a state that refuses the command.
    #[error("{0}")]
    Conflict(String),
    /// 503: the log or the policy point cannot serve now.
    #[error("{0}")]
    Unavailable(String),
}

fn bad(field: &str, reason: impl Into<String>) -> SharingError {
    SharingError::BadRequest {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl From<StoreError> for SharingError {
    fn from(e: StoreError) -> SharingError {
        match e {
            StoreError::Conflict { .. } => SharingError::Conflict(e.to_string()),
            e => SharingError::Unavailable(format!("event store: {e}")),
        }
    }
}

impl From<hub_policies::PolicyError> for SharingError {
    fn from(e: hub_policies::PolicyError) -> SharingError {
        SharingError::Unavailable(e.to_string())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct InstitutionRequest {
    pub institution_id: String,
    pub name: String,
    /// hospital | imaging_center | commission | ai_vendor
    pub kind: String,
    #[serde(default)]
    pub ae_titles: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AllianceRequest {
    pub alliance_id: String,
    pub name: String,
    pub lead_institution: String,
}

/// Links an institution's local patient id to the regional identity derived from the national id.
#[derive(Clone, Debug, Deserialize)]
pub struct LinkRequest {
    pub national_id: String,
    pub local_patient_id: String,
    #[serde(default)]
    pub issuer_of_patient_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GranteeRequest {
    /// institution | alliance | user
    pub kind: String,
    /// The institution or alliance id; for a user, the subject of their tokens.
    pub id: String,
    /// For a user: the (registered) institution whose tokens name `id`. A user is the pair, never
    /// the subject alone; other kinds take no institution.
    #[serde(default)]
    pub institution: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GrantRequest {
    pub study_uid: String,
    #[serde(default)]
    pub series_uid: Option<String>,
    pub grantee: GranteeRequest,
    /// metadata | images | deidentified
    pub scope: String,
    /// treatment | consultation | emergency | research | patient_request | operations
    #[serde(default)]
    pub purpose: Option<String>,
    /// RFC 3339 with an explicit offset; absent = until revoked.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BreakGlassRequest {
    pub reason: String,
    /// How long the emergency access lasts (default 60, at most 240).
    #[serde(default)]
    pub minutes: Option<u32>,
}

/// The longest break-the-glass session.
pub const BREAK_GLASS_MAX_MINUTES: u32 = 240;

fn parse_enum<T: for<'de> Deserialize<'de>>(
    field: &str,
    value: &str,
    one_of: &str,
) -> Result<T, SharingError> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
        bad(
            field,
            format!("unknown value '{value}' (expected one of {one_of})"),
        )
    })
}

fn non_empty(field: &str, value: &str) -> Result<(), SharingError> {
    if value.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if value.len() > 256 || value.chars().any(char::is_control) {
        return Err(bad(field, "must be at most 256 printable characters"));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Sharing {
    store: Arc<dyn EventStore>,
    access: Arc<AccessControl>,
    /// Position up to which the search index (the access projection) has applied the log.
    search_index: Option<watch::Receiver<Position>>,
    patient_key: PatientKey,
}

/// How long a command waits for its change to become visible before answering anyway.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

impl Sharing {
    pub fn new(
        store: Arc<dyn EventStore>,
        access: Arc<AccessControl>,
        patient_key: PatientKey,
    ) -> Sharing {
        Sharing {
            store,
            access,
            search_index: None,
            patient_key,
        }
    }

    /// Commands also wait for the search index to reach what they appended.
    pub fn with_search_index(mut self, applied: watch::Receiver<Position>) -> Sharing {
        self.search_index = Some(applied);
        self
    }

    pub fn access(&self) -> &Arc<AccessControl> {
        &self.access
    }

    async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        subject: &Subject,
        events: Vec<HubEvent>,
    ) -> Result<Position, SharingError> {
        let meta = EventMetadata::new(subject.institution.clone(), format!("user:{}", subject.id));
        let events = events
            .iter()
            .map(|e| e.to_new_event(meta.clone()))
            .collect();
        let appended = self.store.append(&stream, expected, events).await?;
        self.wait_visible(appended.last_position).await;
        Ok(appended.last_position)
    }

    /// Waits until the policy facts and the search index include `position`.
    pub async fn wait_visible(&self, position: Position) {
        if !self.access.wait_applied(position, VISIBILITY_WAIT).await {
            tracing::warn!(position, "the policy facts lag behind the log");
        }
        if let Some(index) = &self.search_index {
            let mut index = index.clone();
            if tokio::time::timeout(VISIBILITY_WAIT, index.wait_for(|p| *p >= position))
                .await
                .is_err()
            {
                tracing::warn!(position, "the search index lags behind the log");
            }
        }
    }

    fn require(&self, subject: &Subject, act: Act) -> Result<(), SharingError> {
        permitted(self.access.allows(subject, act)?, subject, act)
    }

    pub async fn register_institution(
        &self,
        subject: &Subject,
        req: InstitutionRequest,
    ) -> Result<Position, SharingError> {
        self.require(subject, Act::ManageRegistry)?;
        non_empty("institution_id", &req.institution_id)?;
        non_empty("name", &req.name)?;
        let kind: InstitutionKind = parse_enum(
            "kind",
            &req.kind,
            "hospital, imaging_center, commission, ai_vendor",
        )?;
        for ae in &req.ae_titles {
            if ae.is_empty() || ae.len() > 16 || !ae.is_ascii() {
                return Err(bad(
                    "ae_titles",
                    format!("'{ae}' is not an AE title (1-16 ASCII characters)"),
                ));
            }
        }
        self.append(
            StreamId::new(Family::Institution, &req.institution_id),
            ExpectedVersion::NoStream,
            subject,
            vec![
                InstitutionEvent::InstitutionRegistered {
                    institution_id: req.institution_id,
                    name: req.name,
                    kind,
                    ae_titles: req.ae_titles,
                }
                .into(),
            ],
        )
        .await
        .map_err(already("institution"))
    }

    fn known_institution(&self, field: &str, id: &str) -> Result<(), SharingError> {
        if self.access.with_facts(|f| f.institution(id).is_some()) {
            Ok(())
        } else {
            Err(bad(field, format!("no institution '{id}' is registered")))
        }
    }

    pub async fn register_alliance(
        &self,
        subject: &Subject,
        req: AllianceRequest,
    ) -> Result<Position, SharingError> {
        self.require(subject, Act::ManageRegistry)?;
        non_empty("alliance_id", &req.alliance_id)?;
        non_empty("name", &req.name)?;
        self.known_institution("lead_institution", &req.lead_institution)?;
        // The lead hospital is the alliance's first member.
        self.append(
            StreamId::new(Family::Alliance, &req.alliance_id),
            ExpectedVersion::NoStream,
            subject,
            vec![
                AllianceEvent::AllianceRegistered {
                    alliance_id: req.alliance_id.clone(),
                    name: req.name,
                    lead_institution: req.lead_institution.clone(),
                }
                .into(),
                AllianceEvent::InstitutionJoinedAlliance {
                    alliance_id: req.alliance_id,
                    institution_id: req.lead_institution,
                }
                .into(),
            ],
        )
        .await
        .map_err(already("alliance"))
    }

    /// An institution joins (`join = true`) or leaves an alliance.
    pub async fn change_membership(
        &self,
        subject: &Subject,
        alliance_id: &str,
        institution_id: &str,
        join: bool,
    ) -> Result<Position, SharingError> {
        self.require(subject, Act::ManageRegistry)?;
        let member = self.access.with_facts(|f| {
            f.alliance(alliance_id)
                .map(|a| a.members.contains(institution_id))
        });
        let Some(member) = member else {
            return Err(SharingError::NotFound(format!(
                "no alliance '{alliance_id}'"
            )));
        };
        self.known_institution("institution_id", institution_id)?;
        if member == join {
            return Err(SharingError::Conflict(format!(
                "{institution_id} is {} a member of {alliance_id}",
                if join { "already" } else { "not" }
            )));
        }
        let event = if join {
            AllianceEvent::InstitutionJoinedAlliance {
                alliance_id: alliance_id.to_owned(),
                institution_id: institution_id.to_owned(),
            }
        } else {
            AllianceEvent::InstitutionLeftAlliance {
                alliance_id: alliance_id.to_owned(),
                institution_id: institution_id.to_owned(),
            }
        };
        self.append(
            StreamId::new(Family::Alliance, alliance_id),
            ExpectedVersion::Any,
            subject,
            vec![event.into()],
        )
        .await
    }

    /// Links a local patient id of the caller's institution; returns the regional id.
    pub async fn link_patient(
        &self,
        subject: &Subject,
        req: LinkRequest,
    ) -> Result<String, SharingError> {
        self.require_own(subject, Act::ManagePatients)?;
        non_empty("national_id", &req.national_id)?;
        non_empty("local_patient_id", &req.local_patient_id)?;
        let regional = self.patient_key.regional_id(&req.national_id);
        self.append(
            StreamId::new(Family::Patient, &regional),
            ExpectedVersion::Any,
            subject,
            vec![
                PatientEvent::PatientLinked {
                    regional_patient_id: regional.clone(),
                    institution_id: subject.institution.clone(),
                    local_patient_id: req.local_patient_id,
                    issuer_of_patient_id: req.issuer_of_patient_id,
                }
                .into(),
            ],
        )
        .await?;
        Ok(regional)
    }

    /// `act` on the caller's own institution (patients, audit): asked as an act on a study the
    /// caller's institution owns.
    fn require_own(&self, subject: &Subject, act: Act) -> Result<(), SharingError> {
        permitted(self.access.allows_own(subject, act)?, subject, act)
    }

    /// Whether `subject` may manage the consents of `regional`: a role that never may is
    /// refused first (403, naming no patient); the patient themselves, or the hospital admin of an
    /// institution where the patient is linked, may; anyone else is told there is no such
    /// patient for them (404), whether or not the patient exists elsewhere.
    fn require_consents(&self, subject: &Subject, regional: &str) -> Result<(), SharingError> {
        if subject.role != Role::Patient {
            self.require_own(subject, Act::ManagePatients)?;
        }
        if self.access.may_manage_consents(subject, regional)? {
            Ok(())
        } else {
            Err(SharingError::NotFound(format!(
                "no patient {regional} is linked at {}",
                subject.institution
            )))
        }
    }

    /// Records a patient's consent (one of [`ConsentPolicy`]): by the patient, or on their
    /// behalf by an institution where they are linked; returns the consent id.
    pub async fn record_consent(
        &self,
        subject: &Subject,
        regional_patient_id: &str,
        policy: &str,
    ) -> Result<Uuid, SharingError> {
        non_empty("regional_patient_id", regional_patient_id)?;
        self.require_consents(subject, regional_patient_id)?;
        non_empty("policy", policy)?;
        let policy = ConsentPolicy::parse(policy).ok_or_else(|| {
            bad(
                "policy",
                format!(
                    "unknown consent policy '{policy}' (expected one of {})",
                    ConsentPolicy::ALL.map(|p| p.as_str()).join(", ")
                ),
            )
        })?;
        let consent_id = Uuid::now_v7();
        self.append(
            StreamId::new(Family::Consent, consent_id),
            ExpectedVersion::NoStream,
            subject,
            vec![
                ConsentEvent::ConsentRecorded {
                    consent_id,
                    regional_patient_id: regional_patient_id.to_owned(),
                    institution_id: subject.institution.clone(),
                    by_patient: subject.role == Role::Patient,
                    policy,
                    v1_policy_text: None,
                }
                .into(),
            ],
        )
        .await?;
        Ok(consent_id)
    }

    /// The active consents of a patient that count, for the patient or an institution where
    /// they are linked; the listing is recorded in the audit trail (`consents`).
    pub async fn consents(
        &self,
        subject: &Subject,
        regional_patient_id: &str,
    ) -> Result<Vec<Consent>, SharingError> {
        self.require_consents(subject, regional_patient_id)?;
        let consents = self
            .access
            .with_facts(|f| f.consents_of(regional_patient_id).cloned().collect());
        self.append(
            StreamId::new(Family::Access, "consents"),
            ExpectedVersion::Any,
            subject,
            vec![permitted_access(
                subject,
                AccessAction::Consents,
                None,
                if subject.role == Role::Patient {
                    PurposeOfUse::PatientRequest
                } else {
                    PurposeOfUse::Operations
                },
                regional_patient_id.to_owned(),
                None,
            )],
        )
        .await?;
        Ok(consents)
    }

    /// Withdraws a consent: by the patient, or on their behalf by the admin of any institution
    /// where they are linked (not only the one that recorded it).
    pub async fn withdraw_consent(
        &self,
        subject: &Subject,
        consent_id: Uuid,
        reason: Option<String>,
    ) -> Result<Position, SharingError> {
        if subject.role != Role::Patient {
            self.require_own(subject, Act::ManagePatients)?;
        }
        let stream = StreamId::new(Family::Consent, consent_id);
        let history = self.store.read_stream(&stream, 1, 10).await?;
        let regional = history.iter().find_map(|e| match HubEvent::decode(e) {
            Ok(HubEvent::Consent(ConsentEvent::ConsentRecorded {
                regional_patient_id,
                ..
            })) => Some(regional_patient_id),
            _ => None,
        });
        let missing = || SharingError::NotFound(format!("no consent {consent_id}"));
        let Some(regional) = regional else {
            return Err(missing());
        };
        if !self.access.may_manage_consents(subject, &regional)? {
            return Err(missing());
        }
        if history.len() > 1 {
            return Err(SharingError::Conflict(format!(
                "consent {consent_id} is already withdrawn"
            )));
        }
        self.append(
            stream,
            ExpectedVersion::Exact(1),
            subject,
            vec![
                ConsentEvent::ConsentWithdrawn {
                    consent_id,
                    regional_patient_id: regional,
                    reason,
                }
                .into(),
            ],
        )
        .await
    }

    /// Grants a share of `study` (which the caller's institution owns); returns its id.
    pub async fn grant(
        &self,
        subject: &Subject,
        study: &StudyRef,
        req: GrantRequest,
    ) -> Result<Uuid, SharingError> {
        if !self.access.decide(subject, study, None, Act::Share)?.permit {
            return Err(SharingError::Forbidden(format!(
                "a {} of {} may not share this study",
                subject.role, subject.institution
            )));
        }
        if let Some(series) = &req.series_uid {
            non_empty("series_uid", series)?;
        }
        non_empty("grantee.id", &req.grantee.id)?;
        if req.grantee.kind != "user" && req.grantee.institution.is_some() {
            return Err(bad(
                "grantee.institution",
                "only a user grantee names an institution besides its id",
            ));
        }
        let grantee = match req.grantee.kind.as_str() {
            "institution" => {
                self.known_institution("grantee.id", &req.grantee.id)?;
                Grantee::Institution(req.grantee.id)
            }
            "alliance" => {
                if self
                    .access
                    .with_facts(|f| f.alliance(&req.grantee.id).is_none())
                {
                    return Err(bad(
                        "grantee.id",
                        format!("no alliance '{}' is registered", req.grantee.id),
                    ));
                }
                Grantee::Alliance(req.grantee.id)
            }
            "user" => {
                let Some(institution) = req.grantee.institution else {
                    return Err(bad(
                        "grantee.institution",
                        "a user grantee names the institution of the user as well as the \
                         subject (a subject alone is no one user)",
                    ));
                };
                self.known_institution("grantee.institution", &institution)?;
                Grantee::User(UserId {
                    institution,
                    subject: req.grantee.id,
                })
            }
            other => {
                return Err(bad(
                    "grantee.kind",
                    format!(
                        "unknown value '{other}' (expected one of institution, alliance, user)"
                    ),
                ));
            }
        };
        let scope: ShareScope = parse_enum("scope", &req.scope, "metadata, images, deidentified")?;
        let purpose: PurposeOfUse = match &req.purpose {
            None => PurposeOfUse::Treatment,
            Some(p) => parse_enum(
                "purpose",
                p,
                "treatment, consultation, emergency, research, patient_request, operations",
            )?,
        };
        let expires_at = match &req.expires_at {
            None => None,
            Some(text) => {
                let at = DateTime::parse_from_rfc3339(text)
                    .map_err(|e| {
                        bad(
                            "expires_at",
                            format!(
                                "'{text}' is not an RFC 3339 time with an offset \
                                 (like 2027-01-31T18:00:00+08:00): {e}"
                            ),
                        )
                    })?
                    .with_timezone(&Utc);
                if at <= self.access.now() {
                    return Err(bad("expires_at", format!("'{text}' is not in the future")));
                }
                Some(at)
            }
        };
        let share_id = Uuid::now_v7();
        self.append(
            StreamId::new(Family::Share, share_id),
            ExpectedVersion::NoStream,
            subject,
            vec![
                ShareEvent::ShareGranted {
                    share_id,
                    study_uid: study.study_uid.clone(),
                    series_uid: req.series_uid,
                    owner: study.owner.clone(),
                    grantee,
                    scope,
                    purpose,
                    expires_at,
                }
                .into(),
            ],
        )
        .await?;
        Ok(share_id)
    }

    /// Revokes a share; only staff of the owning institution may.
    pub async fn revoke(
        &self,
        subject: &Subject,
        share_id: Uuid,
        reason: String,
    ) -> Result<Position, SharingError> {
        non_empty("reason", &reason)?;
        let share = self.access.with_facts(|f| f.share(&share_id).cloned());
        let Some(share) = share else {
            return Err(SharingError::NotFound(format!("no share {share_id}")));
        };
        let study = StudyRef {
            owner: share.owner.clone(),
            study_uid: share.study_uid.clone(),
            patient_id: None,
        };
        if !self
            .access
            .decide(subject, &study, None, Act::Share)?
            .permit
        {
            return Err(SharingError::NotFound(format!("no share {share_id}")));
        }
        if share.ended.is_some() {
            return Err(SharingError::Conflict(format!(
                "share {share_id} has already ended"
            )));
        }
        self.append(
            StreamId::new(Family::Share, share_id),
            ExpectedVersion::Any,
            subject,
            vec![ShareEvent::ShareRevoked { share_id, reason }.into()],
        )
        .await
    }

    /// Opens a time-boxed emergency access to `study` for the caller, recorded (and flagged) in
    /// the audit trail; returns when it ends.
    pub async fn break_glass(
        &self,
        subject: &Subject,
        study: &StudyRef,
        req: BreakGlassRequest,
    ) -> Result<DateTime<Utc>, SharingError> {
        if !self
            .access
            .decide(subject, study, None, Act::BreakGlass)?
            .permit
        {
            return Err(SharingError::Forbidden(format!(
                "a {} may not break the glass",
                subject.role
            )));
        }
        if req.reason.trim().len() < 10 {
            return Err(bad(
                "reason",
                "a break-the-glass access needs a reason of at least 10 characters",
            ));
        }
        let minutes = req.minutes.unwrap_or(60);
        if minutes == 0 || minutes > BREAK_GLASS_MAX_MINUTES {
            return Err(bad(
                "minutes",
                format!("{minutes} is not between 1 and {BREAK_GLASS_MAX_MINUTES}"),
            ));
        }
        let until = self.access.now() + chrono::Duration::minutes(i64::from(minutes));
        self.append(
            StreamId::new(Family::Access, &study.study_uid),
            ExpectedVersion::Any,
            subject,
            vec![permitted_access(
                subject,
                AccessAction::BreakTheGlass,
                Some(study),
                PurposeOfUse::Emergency,
                req.reason,
                Some(until),
            )],
        )
        .await?;
        Ok(until)
    }

    /// Appends `ShareExpired` for every share whose expiry has passed; returns how many.
    pub async fn expire_due(&self) -> Result<usize, SharingError> {
        let now = self.access.now();
        let due = self.access.with_facts(|f| f.due_expiries(now));
        let hub = Subject {
            id: "sharing".into(),
            role: Role::HubAdmin,
            institution: "hub".into(),
        };
        for share_id in &due {
            let meta = EventMetadata::new(hub.institution.clone(), "service:sharing");
            let event = HubEvent::from(ShareEvent::ShareExpired {
                share_id: *share_id,
            })
            .to_new_event(meta);
            // A share that has not ended holds only its grant (version 1). A revocation racing
            // the expiry wins or loses this version check; either way the share has ended.
            let stream = StreamId::new(Family::Share, share_id);
            match self
                .store
                .append(&stream, ExpectedVersion::Exact(1), vec![event])
                .await
            {
                Ok(a) => self.wait_visible(a.last_position).await,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(due.len())
    }

    /// Appends `ShareExpired` as shares run out, until `stopped` turns true.
    pub async fn run_expiry(&self, mut stopped: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.expire_due().await {
                tracing::warn!(error = %e, "expiring shares failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }
}

/// A permitted access by `subject` for the audit trail, of `study` or of none.
fn permitted_access(
    subject: &Subject,
    action: AccessAction,
    study: Option<&StudyRef>,
    purpose: PurposeOfUse,
    reason: String,
    expires_at: Option<DateTime<Utc>>,
) -> HubEvent {
    AccessEvent::DataAccessed {
        subject: subject.id.clone(),
        role: subject.role.as_str().to_owned(),
        institution: subject.institution.clone(),
        action,
        study_uid: study.map(|s| s.study_uid.clone()),
        series_uid: None,
        sop_instance_uid: None,
        purpose,
        decision: AccessDecision::Permit,
        reason: Some(reason),
        owner: study.map(|s| s.owner.clone()),
        results: vec![],
        expires_at,
    }
    .into()
}

fn permitted(allowed: bool, subject: &Subject, act: Act) -> Result<(), SharingError> {
    if allowed {
        Ok(())
    } else {
        Err(SharingError::Forbidden(format!(
            "a {} may not {}",
            subject.role,
            act.as_str()
        )))
    }
}

/// A `NoStream` conflict on a registry stream means the thing already exists.
fn already(what: &'static str) -> impl Fn(SharingError) -> SharingError {
    move |e| match e {
        SharingError::Conflict(_) => {
            SharingError::Conflict(format!("this {what} is already registered"))
        }
        e => e,
    }
}
