//! Diagnosis reports on stream `diagnosis-<StudyInstanceUID>`: drafted, signed (then never
//! changed), amended (a new signed version naming the one it replaces and why). AI findings on
//! the same stream are listed beside the reports, never merged into them.

use chrono::{DateTime, Utc};
use hub_events::catalog::{DiagnosisEvent, Finding};
use hub_events::{ExpectedVersion, Family, HubEvent, Position, StreamId};
use hub_policies::{Act, Role, StudyRef, Subject};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::commands::{ConsultError, Consults, bad, non_empty};

#[derive(Clone, Debug, Deserialize)]
pub struct DraftRequest {
    /// The draft to replace; absent = a new report.
    #[serde(default)]
    pub report_id: Option<Uuid>,
    pub findings: String,
    pub impression: String,
    /// The consultation the report answers.
    #[serde(default)]
    pub consult_id: Option<Uuid>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AmendRequest {
    pub findings: String,
    pub impression: String,
    pub reason: String,
}

/// One version of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportVersion {
    pub report_id: Uuid,
    pub author: String,
    pub findings: String,
    pub impression: String,
    pub consult_id: Option<Uuid>,
    pub drafted_at: DateTime<Utc>,
    pub signed_by: Option<String>,
    pub signed_at: Option<DateTime<Utc>>,
    /// The version this one replaces, and why.
    pub amends: Option<Uuid>,
    pub reason: Option<String>,
    /// The version that replaced this one.
    pub amended_by: Option<Uuid>,
}

/// The reports of a study, and the AI findings recorded beside them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub study_uid: String,
    pub versions: Vec<ReportVersion>,
    pub ai_findings: Vec<AiFindings>,
    #[serde(skip)]
    pub stream_version: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AiFindings {
    pub model_id: String,
    pub model_version: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn version(&self, id: &Uuid) -> Option<&ReportVersion> {
        self.versions.iter().find(|v| v.report_id == *id)
    }

    fn version_mut(&mut self, id: &Uuid) -> Option<&mut ReportVersion> {
        self.versions.iter_mut().find(|v| v.report_id == *id)
    }

    /// Folds one event of the study's diagnosis stream.
    pub fn apply(&mut self, at: DateTime<Utc>, e: &DiagnosisEvent) {
        match e {
            DiagnosisEvent::ReportDrafted {
                report_id,
                author,
                findings,
                impression,
                consult_id,
                ..
            } => {
                let draft = ReportVersion {
                    report_id: *report_id,
                    author: author.clone(),
                    findings: findings.clone(),
                    impression: impression.clone(),
                    consult_id: *consult_id,
                    drafted_at: at,
                    signed_by: None,
                    signed_at: None,
                    amends: None,
                    reason: None,
                    amended_by: None,
                };
                match self.version_mut(report_id) {
                    Some(v) if v.signed_at.is_none() => *v = draft,
                    Some(_) => {}
                    None => self.versions.push(draft),
                }
            }
            DiagnosisEvent::ReportSigned { report_id, signer } => {
                if let Some(v) = self.version_mut(report_id)
                    && v.signed_at.is_none()
                {
                    v.signed_by = Some(signer.clone());
                    v.signed_at = Some(at);
                }
            }
            DiagnosisEvent::ReportAmended {
                report_id,
                author,
                findings,
                impression,
                reason,
                new_report_id,
                ..
            } => {
                // Before amendments had their own id, one was known by its event's position.
                let new_id = new_report_id.unwrap_or_else(Uuid::nil);
                let consult_id = self.version(report_id).and_then(|v| v.consult_id);
                if let Some(old) = self.version_mut(report_id) {
                    old.amended_by = Some(new_id);
                }
                self.versions.push(ReportVersion {
                    report_id: new_id,
                    author: author.clone(),
                    findings: findings.clone(),
                    impression: impression.clone(),
                    consult_id,
                    drafted_at: at,
                    signed_by: None,
                    signed_at: None,
                    amends: Some(*report_id),
                    reason: Some(reason.clone()),
                    amended_by: None,
                });
            }
            DiagnosisEvent::AiFindingsRecorded {
                model_id,
                model_version,
                findings,
                ..
            } => self.ai_findings.push(AiFindings {
                model_id: model_id.clone(),
                model_version: model_version.clone(),
                findings: findings.clone(),
            }),
            DiagnosisEvent::AiInferenceFailed { .. } => {}
        }
    }
}

/// The report commands and the reading of a study's reports.
pub struct Reports<'a>(pub &'a Consults);

fn changing(report_id: &Uuid, v: &ReportVersion) -> ConsultError {
    ConsultError::Conflict(match v.amended_by {
        Some(newer) => {
            format!("report {report_id} was amended by {newer}: amend the latest version instead")
        }
        None => format!(
            "report {report_id} is signed and cannot be changed; amend it (a new version with a reason)"
        ),
    })
}

impl Reports<'_> {
    /// The reports of `study_uid` folded from its diagnosis stream (the caller checked the read).
    pub async fn of(&self, study_uid: &str) -> Result<Report, ConsultError> {
        let stream = StreamId::new(Family::Diagnosis, study_uid);
        let mut report = Report {
            study_uid: study_uid.to_owned(),
            ..Report::default()
        };
        let mut from = 1;
        loop {
            let batch = self.0.store.read_stream(&stream, from, 500).await?;
            let Some(last) = batch.last() else { break };
            from = last.stream_version + 1;
            for event in &batch {
                report.stream_version = event.stream_version;
                match HubEvent::decode(event) {
                    Ok(HubEvent::Diagnosis(e)) => report.apply(event.recorded_at, &e),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "a report event does not decode"),
                }
            }
        }
        Ok(report)
    }

    /// Clinicians who may read the study's images write its reports.
    fn may_write(&self, subject: &Subject, study: &StudyRef) -> Result<(), ConsultError> {
        let clinician = matches!(subject.role, Role::Radiologist | Role::Physician);
        if clinician
            && self
                .0
                .access
                .decide(subject, study, None, Act::ReadImages)?
                .permit
        {
            Ok(())
        } else {
            Err(ConsultError::Forbidden(format!(
                "{} ({}) of {} may not write reports on study {}",
                subject.id, subject.role, subject.institution, study.study_uid
            )))
        }
    }

    async fn append(
        &self,
        subject: &Subject,
        report: &Report,
        events: Vec<DiagnosisEvent>,
    ) -> Result<Position, ConsultError> {
        let expected = if report.stream_version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(report.stream_version)
        };
        self.0
            .append(
                StreamId::new(Family::Diagnosis, &report.study_uid),
                expected,
                subject,
                events.into_iter().map(HubEvent::from).collect(),
            )
            .await
    }

    /// Writes (or rewrites) a draft; returns its id.
    pub async fn draft(
        &self,
        subject: &Subject,
        study: &StudyRef,
        req: DraftRequest,
    ) -> Result<Uuid, ConsultError> {
        self.may_write(subject, study)?;
        non_empty("findings", &req.findings, 20_000)?;
        non_empty("impression", &req.impression, 20_000)?;
        if let Some(id) = req.consult_id {
            let c = self.0.get(subject, id).map_err(|_| {
                bad(
                    "consult_id",
                    format!("no consultation {id} you take part in"),
                )
            })?;
            if c.study_uid != study.study_uid {
                return Err(bad(
                    "consult_id",
                    format!("consultation {id} is about study {}", c.study_uid),
                ));
            }
        }
        let report = self.of(&study.study_uid).await?;
        let report_id = match req.report_id {
            None => Uuid::now_v7(),
            Some(id) => match report.version(&id) {
                None => return Err(ConsultError::NotFound(format!("no report {id}"))),
                Some(v) if v.signed_at.is_some() => return Err(changing(&id, v)),
                Some(_) => id,
            },
        };
        self.append(
            subject,
            &report,
            vec![DiagnosisEvent::ReportDrafted {
                report_id,
                study_uid: study.study_uid.clone(),
                author: subject.id.clone(),
                findings: req.findings,
                impression: req.impression,
                consult_id: req.consult_id,
            }],
        )
        .await?;
        Ok(report_id)
    }

    /// Signs a draft; from now on it is never changed.
    pub async fn sign(
        &self,
        subject: &Subject,
        study: &StudyRef,
        report_id: Uuid,
    ) -> Result<Position, ConsultError> {
        self.may_write(subject, study)?;
        let report = self.of(&study.study_uid).await?;
        match report.version(&report_id) {
            None => Err(ConsultError::NotFound(format!("no report {report_id}"))),
            Some(v) if v.signed_at.is_some() => Err(ConsultError::Conflict(format!(
                "report {report_id} is already signed (by {})",
                v.signed_by.as_deref().unwrap_or("?")
            ))),
            Some(_) => {
                self.append(
                    subject,
                    &report,
                    vec![DiagnosisEvent::ReportSigned {
                        report_id,
                        signer: subject.id.clone(),
                    }],
                )
                .await
            }
        }
    }

    /// Amends the latest signed version: a new version, signed by the caller, naming the one it
    /// replaces and why; returns its id.
    pub async fn amend(
        &self,
        subject: &Subject,
        study: &StudyRef,
        report_id: Uuid,
        req: AmendRequest,
    ) -> Result<Uuid, ConsultError> {
        self.may_write(subject, study)?;
        non_empty("findings", &req.findings, 20_000)?;
        non_empty("impression", &req.impression, 20_000)?;
        non_empty("reason", &req.reason, 1000)?;
        let report = self.of(&study.study_uid).await?;
        match report.version(&report_id) {
            None => return Err(ConsultError::NotFound(format!("no report {report_id}"))),
            Some(v) if v.signed_at.is_none() => {
                return Err(ConsultError::Conflict(format!(
                    "report {report_id} is a draft: change it with a new draft, or sign it first"
                )));
            }
            Some(v) if v.amended_by.is_some() => return Err(changing(&report_id, v)),
            Some(_) => {}
        }
        let new_id = Uuid::now_v7();
        self.append(
            subject,
            &report,
            vec![
                DiagnosisEvent::ReportAmended {
                    report_id,
                    author: subject.id.clone(),
                    findings: req.findings,
                    impression: req.impression,
                    reason: req.reason,
                    new_report_id: Some(new_id),
                },
                DiagnosisEvent::ReportSigned {
                    report_id: new_id,
                    signer: subject.id.clone(),
                },
            ],
        )
        .await?;
        Ok(new_id)
    }
}
