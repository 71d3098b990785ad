//! Study access for the data paths: find the study, ask the policy point, record the access in
//! the audit trail, and answer a refusal exactly as a missing study (no existence leak).

use hub_events::catalog::{AccessAction, AccessEvent, AccessedStudy, Decision as AccessDecision};
use hub_events::{EventMetadata, ExpectedVersion, Family, HubEvent, StreamId};
use hub_policies::{Act, Decision, Subject, View};
use hub_projections::StudyCatalog;
use hub_projections::study_catalog::{CatalogInstance, CatalogStudy};

use crate::GatewayState;
use crate::problem::Problem;

/// A study the caller may read, with what of it they may read.
pub struct Opened {
    pub study: CatalogStudy,
    pub decision: Decision,
    /// The instances the request names, limited to the series the decision allows.
    pub instances: Vec<CatalogInstance>,
}

impl Opened {
    pub fn view(&self) -> View {
        self.decision.view
    }
}

/// What a request names below the study.
#[derive(Clone, Copy, Debug, Default)]
pub struct Below<'a> {
    pub series: Option<&'a str>,
    pub instance: Option<&'a str>,
}

fn missing(study: &str, below: Below<'_>) -> Problem {
    Problem::not_found(match (below.series, below.instance) {
        (_, Some(i)) => format!("no instance {i} in study {study}"),
        (Some(s), None) => format!("no series {s} in study {study}"),
        _ => format!("no study {study}"),
    })
}

pub use hub_application::search::study_ref;

/// Opens `study_uid` for `act`: the first holder (the caller's own institution first) whose
/// study the policy lets the caller `act` on. Audited as `action`, permitted or refused. The
/// instances the request names are loaded unless it only asks about the study (`below` empty
/// and `act` a metadata read), and a request that names no instance the caller may see is 404.
///
/// The UIDs are taken as the caller's view shows them: a study (series, instance) seen
/// de-identified is opened by its mapped UIDs only, and one seen in full by its stored UIDs
/// only, so the UIDs a de-identified view replaces never open anything.
pub async fn open(
    state: &GatewayState,
    subject: &Subject,
    act: Act,
    action: AccessAction,
    sent_study: &str,
    sent: Below<'_>,
) -> Result<Opened, Problem> {
    let (resolved, (series, instance)) =
        crate::deid::resolve(state, subject, sent_study, sent).await?;
    let study_uid = resolved.as_str();
    let below = Below {
        series: series.as_deref(),
        instance: instance.as_deref(),
    };
    let load = act != Act::ReadMetadata
        || below.series.is_some()
        || below.instance.is_some()
        || action == AccessAction::Metadata;
    let pool = state.read_models.pool();
    let holders = StudyCatalog::holders(pool, study_uid, &subject.institution)
        .await
        .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?;
    let mut refused = None;
    for study in holders {
        let mut decision = state
            .auth
            .access()
            .decide(subject, &study_ref(&study), below.series, act)
            .map_err(|e| Problem::unavailable(e.to_string()))?;
        if decision.permit
            && !names_as_shown(state, decision.view, sent_study, sent, study_uid, below)
        {
            decision.permit = false;
            decision.reason = format!(
                "{}; the request names the study by UIDs its view does not show",
                decision.reason
            );
        }
        if !decision.permit {
            refused.get_or_insert((study, decision));
            continue;
        }
        let mut instances = if load {
            StudyCatalog::instances(
                pool,
                &study.institution,
                study_uid,
                below.series,
                below.instance,
            )
            .await
            .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?
        } else {
            Vec::new()
        };
        if let Some(only) = &decision.only_series {
            instances.retain(|i| only.contains(&i.series_uid));
        }
        record(state, subject, action, &study, below, &decision, vec![]).await?;
        if load && instances.is_empty() {
            return Err(missing(sent_study, sent));
        }
        return Ok(Opened {
            study,
            decision,
            instances,
        });
    }
    if let Some((study, decision)) = refused {
        record(state, subject, action, &study, below, &decision, vec![]).await?;
    }
    Err(missing(sent_study, sent))
}

/// Whether the UIDs the caller sent are the ones `view` shows for the stored ones.
fn names_as_shown(
    state: &GatewayState,
    view: View,
    sent_study: &str,
    sent: Below<'_>,
    study: &str,
    below: Below<'_>,
) -> bool {
    let shown = |stored: &str| crate::deid::map_uid(state, view, stored);
    let same = |sent: Option<&str>, stored: Option<&str>| match (sent, stored) {
        (Some(sent), Some(stored)) => sent == shown(stored),
        (None, None) => true,
        _ => false,
    };
    sent_study == shown(study)
        && same(sent.series, below.series)
        && same(sent.instance, below.instance)
}

/// The search over the read models, decided by the policy point, de-identified with the hub's
/// secret.
pub fn searcher(state: &GatewayState) -> hub_application::Searcher<'_> {
    hub_application::Searcher {
        pool: state.read_models.pool(),
        access: state.auth.access(),
        deid_secret: &state.deid.0,
    }
}

impl From<hub_application::SearchError> for Problem {
    fn from(e: hub_application::SearchError) -> Problem {
        Problem::unavailable(e.to_string())
    }
}

/// Appends the access event; data is served only once its access is on the record.
async fn record(
    state: &GatewayState,
    subject: &Subject,
    action: AccessAction,
    study: &CatalogStudy,
    below: Below<'_>,
    decision: &Decision,
    results: Vec<AccessedStudy>,
) -> Result<(), Problem> {
    let event = AccessEvent::DataAccessed {
        subject: subject.id.clone(),
        role: subject.role.as_str().to_owned(),
        institution: subject.institution.clone(),
        action,
        study_uid: Some(study.study_uid.clone()),
        series_uid: below.series.map(str::to_owned),
        sop_instance_uid: below.instance.map(str::to_owned),
        purpose: decision.purpose,
        decision: if decision.permit {
            AccessDecision::Permit
        } else {
            AccessDecision::Deny
        },
        reason: (!decision.permit).then(|| decision.reason.clone()),
        owner: Some(study.institution.clone()),
        results,
        expires_at: None,
    };
    append_access(state, subject, &study.study_uid, event).await
}

/// Records a query: one event naming every study the answer showed.
pub async fn record_query(
    state: &GatewayState,
    subject: &Subject,
    shown: Vec<AccessedStudy>,
) -> Result<(), Problem> {
    let event = AccessEvent::DataAccessed {
        subject: subject.id.clone(),
        role: subject.role.as_str().to_owned(),
        institution: subject.institution.clone(),
        action: AccessAction::Query,
        study_uid: None,
        series_uid: None,
        sop_instance_uid: None,
        purpose: hub_events::catalog::PurposeOfUse::Treatment,
        decision: AccessDecision::Permit,
        reason: None,
        owner: None,
        results: shown,
        expires_at: None,
    };
    append_access(state, subject, "queries", event).await
}

async fn append_access(
    state: &GatewayState,
    subject: &Subject,
    stream_id: &str,
    event: AccessEvent,
) -> Result<(), Problem> {
    let meta = EventMetadata::new(subject.institution.clone(), format!("user:{}", subject.id));
    state
        .store
        .append(
            &StreamId::new(Family::Access, stream_id),
            ExpectedVersion::Any,
            vec![HubEvent::from(event).to_new_event(meta)],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            Problem::unavailable(format!(
                "the access could not be recorded in the audit trail, so it is not served: {e}"
            ))
        })
}
