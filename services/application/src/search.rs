//! The policy-filtered search: what a caller is shown, and in which view.
//!
//! A study, series or instance is shown when a single read of its metadata would be permitted,
//! and in the view that read would have (the policy point's [`hub_policies::Decision`]). The
//! rows come in two sections:
//!
//! 1. **De-identified**: rows the caller may see only through a de-identified share. They are
//!    matched on the values the de-identified view shows (mapped UIDs, the share's patient
//!    pseudonym, the profile's replacements), never on the originals it removes, and ordered by
//!    their mapped UIDs, so no search can spell a removed name out letter by letter, bisect a
//!    removed date, or sort by it. The caller's de-identified shares are explicit grants, so
//!    this section is found from the shares (an index) and read whole.
//! 2. **Full**: rows the caller may see as stored, found and ordered by the SQL visibility filter
//!    over the read models ([`StudyCatalog::search`]), with the de-identified relation left out.
//!
//! A page runs over the de-identified section first, then the full one.

use std::collections::HashMap;

use hub_deid::{Deidentifier, MAPPED_UID_ROOT, PSEUDONYM_PREFIX};
use hub_policies::{AccessControl, Act, Decision, PolicyError, Relation, StudyRef, Subject, View};
use hub_projections::study_catalog::{CatalogInstance, CatalogSeries, CatalogStudy};
use hub_projections::{SeriesQuery, StudyCatalog, StudyQuery, Viewer};
use serde_json::{Value, json};
use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("study catalog: {0}")]
    Catalog(#[from] sqlx::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A row the caller is shown, with the view it is shown in.
#[derive(Clone, Debug, PartialEq)]
pub struct Shown<T> {
    pub row: T,
    pub view: View,
}

/// The search over one read-model database, decided by one policy point, with the hub's
/// de-identification secret (the per-share keys derive from it).
pub struct Searcher<'a> {
    pub pool: &'a AnyPool,
    pub access: &'a AccessControl,
    pub deid_secret: &'a [u8],
}

/// Rows of the de-identified section read per catalog query.
const CANDIDATE_PAGE: u32 = 1000;

/// The study a row belongs to, as the policy point is asked about it.
pub fn study_ref(s: &CatalogStudy) -> StudyRef {
    StudyRef {
        owner: s.institution.clone(),
        study_uid: s.study_uid.clone(),
        patient_id: s.patient_id.clone(),
    }
}

/// The search filter for `subject`: the relations through which its role may read metadata, in
/// full or de-identified, as the policy says.
pub fn viewer(access: &AccessControl, subject: &Subject) -> Viewer {
    Viewer {
        subject: subject.id.clone(),
        institution: subject.institution.clone(),
        relations: access.engine().search_relations(subject.role).to_vec(),
        now_micros: access.now().timestamp_micros(),
        consult_lead_micros: access
            .with_facts(|f| f.consults().lead())
            .num_microseconds()
            .unwrap_or(i64::MAX),
    }
}

/// The caller's viewer, and the one that finds the full section: the same without the
/// de-identified relation.
fn viewers(access: &AccessControl, subject: &Subject) -> (Viewer, Viewer) {
    let viewer = viewer(access, subject);
    let full = through(&viewer, |r| r != Relation::GrantDeidentified);
    (viewer, full)
}

/// A query's page at another offset and limit.
trait Paged: Clone {
    fn page(&self, offset: u32, limit: u32) -> Self;
}

impl Paged for StudyQuery {
    fn page(&self, offset: u32, limit: u32) -> Self {
        StudyQuery {
            offset,
            limit,
            ..self.clone()
        }
    }
}

impl Paged for SeriesQuery {
    fn page(&self, offset: u32, limit: u32) -> Self {
        SeriesQuery {
            offset,
            limit,
            ..self.clone()
        }
    }
}

/// The same viewer through some of its relations only.
fn through(viewer: &Viewer, keep: impl Fn(Relation) -> bool) -> Viewer {
    Viewer {
        relations: viewer
            .relations
            .iter()
            .copied()
            .filter(|r| keep(*r))
            .collect(),
        ..viewer.clone()
    }
}

/// The page `offset..offset + limit` of the full section followed by the de-identified one, in
/// the order of the keys its views show: `full(offset, limit)` reads a page of the full section
/// and says whether more follow; `deidentified()` finds the de-identified section, only when the
/// page reaches past the full one (the first pages of most searches never need it).
async fn concatenated<T, F, Fut, D, DFut>(
    offset: u32,
    limit: u32,
    full: F,
    deidentified: D,
) -> Result<(Vec<Shown<T>>, bool), SearchError>
where
    F: Fn(u32, u32) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, bool), SearchError>>,
    D: FnOnce() -> DFut,
    DFut: std::future::Future<Output = Result<Vec<(String, Shown<T>)>, SearchError>>,
{
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    let shown = |rows: Vec<T>| {
        rows.into_iter()
            .map(|row| Shown {
                row,
                view: View::Full,
            })
            .collect::<Vec<_>>()
    };
    let (rows, more) = full(offset, limit).await?;
    if more {
        return Ok((shown(rows), true));
    }
    // The full section ends on this page, or before it: how many rows it has tells where the
    // de-identified section starts (counted only for a page past the end of the full section).
    let full_rows = if rows.is_empty() && offset > 0 {
        full(0, offset).await?.0.len() as u32
    } else {
        offset + rows.len() as u32
    };
    let mut deidentified = deidentified().await?;
    deidentified.sort_by(|a, b| a.0.cmp(&b.0));
    let skip = offset.saturating_sub(full_rows) as usize;
    let room = limit as usize - rows.len();
    let total = deidentified.len();
    let mut page = shown(rows);
    page.extend(
        deidentified
            .into_iter()
            .skip(skip)
            .take(room)
            .map(|(_, s)| s),
    );
    Ok((page, total > skip + room))
}

impl Searcher<'_> {
    fn decide_all<'r>(
        &self,
        subject: &Subject,
        requests: impl Iterator<Item = (StudyRef, Option<&'r str>)>,
    ) -> Result<Vec<Decision>, PolicyError> {
        let now = self.access.now();
        let engine = self.access.engine();
        self.access.with_facts(|facts| {
            requests
                .map(|(study, series)| {
                    engine.decide(subject, &study, series, Act::ReadMetadata, facts, now)
                })
                .collect()
        })
    }

    /// Every study the caller holds a de-identified share of and may see, unmatched, with the
    /// view of the study as a whole (full when another relation shows it in full: its series
    /// may still be seen only de-identified).
    async fn deidentified_studies(
        &self,
        subject: &Subject,
        viewer: &Viewer,
    ) -> Result<Vec<(CatalogStudy, View)>, SearchError> {
        if !viewer.relations.contains(&Relation::GrantDeidentified) {
            return Ok(Vec::new());
        }
        let shares = through(viewer, |r| r == Relation::GrantDeidentified);
        let mut query = StudyQuery {
            limit: CANDIDATE_PAGE,
            ..StudyQuery::default()
        };
        let mut out = Vec::new();
        loop {
            let (rows, more) = StudyCatalog::search(self.pool, &shares, &query).await?;
            let decisions = self.decide_all(subject, rows.iter().map(|s| (study_ref(s), None)))?;
            for (study, decision) in rows.into_iter().zip(decisions) {
                if decision.permit {
                    out.push((study, decision.view));
                }
            }
            if !more {
                return Ok(out);
            }
            query.offset += CANDIDATE_PAGE;
        }
    }

    fn deidentifier(&self, share: uuid::Uuid) -> Deidentifier {
        Deidentifier::for_share(self.deid_secret, share)
    }

    /// Studies the caller may see that match `query`: a page, and whether more follow.
    pub async fn studies(
        &self,
        subject: &Subject,
        query: &StudyQuery,
    ) -> Result<(Vec<Shown<CatalogStudy>>, bool), SearchError> {
        let (viewer, full) = viewers(self.access, subject);
        let full = &full;
        concatenated(
            query.offset,
            query.limit,
            |offset, limit| {
                let page = query.page(offset, limit);
                async move { Ok(StudyCatalog::search(self.pool, full, &page).await?) }
            },
            || async {
                let mut out = Vec::new();
                if !ShownStudy::may_match(self.deid_secret, query) {
                    return Ok(out);
                }
                for (study, view) in self.deidentified_studies(subject, &viewer).await? {
                    // A study shown in full is the full section's.
                    let View::Deidentified(share) = view else {
                        continue;
                    };
                    let shown = ShownStudy::of(&self.deidentifier(share), &study);
                    if shown.matches(query) {
                        out.push((shown.study_uid, Shown { row: study, view }));
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    /// Series the caller may see across studies (QIDO-RS `/series`): a page, and whether more
    /// follow.
    pub async fn series(
        &self,
        subject: &Subject,
        query: &SeriesQuery,
    ) -> Result<(Vec<Shown<CatalogSeries>>, bool), SearchError> {
        let (viewer, full) = viewers(self.access, subject);
        let full = &full;
        concatenated(
            query.offset,
            query.limit,
            |offset, limit| {
                let page = query.page(offset, limit);
                async move { Ok(StudyCatalog::search_series(self.pool, full, &page).await?) }
            },
            || async {
                let mut deidentified = Vec::new();
                if !may_match_mapped(query) {
                    return Ok(deidentified);
                }
                for (study, views) in self.deidentified_rows(subject, &viewer).await? {
                    // The series holding an instance of the SOP class asked for: one read of the
                    // study's instances, not one per series.
                    let of_class: Option<std::collections::HashSet<String>> =
                        match &query.sop_class_uid {
                            Some(class) => Some(
                                StudyCatalog::instances(
                                    self.pool,
                                    &study.institution,
                                    &study.study_uid,
                                    None,
                                    None,
                                )
                                .await?
                                .into_iter()
                                .filter(|i| i.sop_class_uid == *class)
                                .map(|i| i.series_uid)
                                .collect(),
                            ),
                            None => None,
                        };
                    for row in &views.series {
                        if query.modality.is_some() && row.modality != query.modality {
                            continue;
                        }
                        if of_class
                            .as_ref()
                            .is_some_and(|series| !series.contains(&row.series_uid))
                        {
                            continue;
                        }
                        if let Some((key, view)) = views.show(&row.series_uid, None, query) {
                            deidentified.push((
                                key,
                                Shown {
                                    row: row.clone(),
                                    view,
                                },
                            ));
                        }
                    }
                }
                Ok(deidentified)
            },
        )
        .await
    }

    /// Instances the caller may see across studies (QIDO-RS `/instances`): a page, and whether
    /// more follow.
    pub async fn instances(
        &self,
        subject: &Subject,
        query: &SeriesQuery,
    ) -> Result<(Vec<Shown<CatalogInstance>>, bool), SearchError> {
        let (viewer, full) = viewers(self.access, subject);
        let full = &full;
        concatenated(
            query.offset,
            query.limit,
            |offset, limit| {
                let page = query.page(offset, limit);
                async move { Ok(StudyCatalog::search_instances(self.pool, full, &page).await?) }
            },
            || async {
                let mut deidentified = Vec::new();
                if !may_match_mapped(query) {
                    return Ok(deidentified);
                }
                for (study, views) in self.deidentified_rows(subject, &viewer).await? {
                    let modalities: HashMap<&String, &Option<String>> = views
                        .series
                        .iter()
                        .map(|s| (&s.series_uid, &s.modality))
                        .collect();
                    let rows = StudyCatalog::instances(
                        self.pool,
                        &study.institution,
                        &study.study_uid,
                        None,
                        None,
                    )
                    .await?;
                    for row in rows {
                        let kept = query
                            .sop_class_uid
                            .as_ref()
                            .is_none_or(|c| *c == row.sop_class_uid)
                            && query.modality.as_ref().is_none_or(|m| {
                                modalities
                                    .get(&row.series_uid)
                                    .is_some_and(|s| s.as_ref() == Some(m))
                            });
                        if !kept {
                            continue;
                        }
                        if let Some((key, view)) =
                            views.show(&row.series_uid, Some(&row.sop_instance_uid), query)
                        {
                            deidentified.push((key, Shown { row, view }));
                        }
                    }
                }
                Ok(deidentified)
            },
        )
        .await
    }

    /// The studies whose series or instances the de-identified section of a series-level search
    /// draws from, each with the series the caller sees only de-identified (a series' view is
    /// decided for that series: a study may be seen in full through one series' grant and
    /// de-identified through another's).
    async fn deidentified_rows(
        &self,
        subject: &Subject,
        viewer: &Viewer,
    ) -> Result<Vec<(CatalogStudy, SeriesViews)>, SearchError> {
        let mut out = Vec::new();
        for (study, _) in self.deidentified_studies(subject, viewer).await? {
            let series =
                StudyCatalog::series(self.pool, &study.institution, &study.study_uid).await?;
            let decisions = self.decide_all(
                subject,
                series
                    .iter()
                    .map(|s| (study_ref(&study), Some(s.series_uid.as_str()))),
            )?;
            let views = series
                .iter()
                .zip(decisions)
                .filter_map(|(s, d)| match (d.permit, d.view) {
                    (true, View::Deidentified(share)) => {
                        Some((s.series_uid.clone(), (share, self.deidentifier(share))))
                    }
                    _ => None,
                })
                .collect::<HashMap<_, _>>();
            if views.is_empty() {
                continue;
            }
            let study_uid = study.study_uid.clone();
            out.push((
                study,
                SeriesViews {
                    study_uid,
                    series,
                    views,
                },
            ));
        }
        Ok(out)
    }
}

/// The series of one study the caller sees only de-identified, with the de-identifier of each.
struct SeriesViews {
    study_uid: String,
    series: Vec<CatalogSeries>,
    views: HashMap<String, (uuid::Uuid, Deidentifier)>,
}

impl SeriesViews {
    /// The view of a row, with the key it is ordered by (its mapped study, then series or
    /// instance UID), when it is shown de-identified and the query's UIDs match what its view
    /// shows.
    fn show(
        &self,
        series_uid: &str,
        instance_uid: Option<&str>,
        query: &SeriesQuery,
    ) -> Option<(String, View)> {
        let (share, d) = self.views.get(series_uid)?;
        let study = d.map_uid(&self.study_uid);
        let series = d.map_uid(series_uid);
        let instance = instance_uid.map(|i| d.map_uid(i));
        let named = |wanted: &Option<String>, shown: Option<&String>| {
            wanted.as_ref().is_none_or(|w| Some(w) == shown)
        };
        let matched = named(&query.study_uid, Some(&study))
            && named(&query.series_uid, Some(&series))
            && (instance_uid.is_none() || named(&query.sop_instance_uid, instance.as_ref()))
            && (instance_uid.is_some() || query.sop_instance_uid.is_none());
        matched.then(|| {
            let below = instance.unwrap_or(series);
            (format!("{study}\\{below}"), View::Deidentified(*share))
        })
    }
}

/// Whether a value or pattern the caller sent can match a value that starts with `prefix`.
fn may_start_with(wanted: &str, prefix: &str) -> bool {
    let literal: String = wanted
        .chars()
        .take_while(|c| !matches!(c, '*' | '?'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let prefix = prefix.to_ascii_lowercase();
    literal.starts_with(&prefix) || (literal.len() < wanted.len() && prefix.starts_with(&literal))
}

/// Whether the UIDs of a series- or instance-level query could be a de-identified view's.
fn may_match_mapped(q: &SeriesQuery) -> bool {
    [&q.study_uid, &q.series_uid, &q.sop_instance_uid]
        .into_iter()
        .flatten()
        .all(|uid| may_start_with(uid, MAPPED_UID_ROOT))
}

/// A study's matching keys as its de-identified view shows them.
struct ShownStudy {
    study_uid: String,
    patient_id: Option<String>,
    patient_name: Option<String>,
    accession_number: Option<String>,
    study_date: Option<String>,
    modalities: Vec<String>,
}

fn text(vr: &str, value: &Option<String>) -> Value {
    match value {
        Some(v) => json!({"vr": vr, "Value": [v]}),
        None => json!({"vr": vr}),
    }
}

/// The first value of a DICOM JSON attribute as text (a person name's alphabetic group).
fn first(json: &Value, tag: &str) -> Option<String> {
    let value = json.get(tag)?.get("Value")?.get(0)?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Object(pn) => pn.get("Alphabetic")?.as_str()?.to_owned(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

impl ShownStudy {
    /// The keys the de-identifier leaves, taken from its own output (no second copy of the
    /// profile here).
    fn of(d: &Deidentifier, s: &CatalogStudy) -> ShownStudy {
        let mut json = json!({
            "0020000D": {"vr": "UI", "Value": [s.study_uid]},
            "00100020": text("LO", &s.patient_id),
            "00100010": match &s.patient_name {
                Some(n) => json!({"vr": "PN", "Value": [{"Alphabetic": n}]}),
                None => json!({"vr": "PN"}),
            },
            "00080050": text("SH", &s.accession_number),
            "00080020": text("DA", &s.study_date),
            "00080061": {"vr": "CS", "Value": s.modalities.split('\\').filter(|m| !m.is_empty()).collect::<Vec<_>>()},
        });
        d.json(&mut json);
        let modalities = json
            .get("00080061")
            .and_then(|a| a.get("Value"))
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ShownStudy {
            study_uid: first(&json, "0020000D").unwrap_or_default(),
            patient_id: first(&json, "00100020"),
            patient_name: first(&json, "00100010"),
            accession_number: first(&json, "00080050"),
            study_date: first(&json, "00080020"),
            modalities,
        }
    }

    /// Whether any de-identified row could match `q`, from what the view shows of a probe row:
    /// values it removes or replaces by a constant are the same for every row, and values it
    /// replaces by a keyed hash start with the de-identifier's prefixes (`2.25.`, `ANON-`).
    fn may_match(secret: &[u8], q: &StudyQuery) -> bool {
        let probe = CatalogStudy {
            institution: String::new(),
            study_uid: "1.2.3".into(),
            patient_id: Some("P".into()),
            patient_name: Some("N".into()),
            patient_birth_date: None,
            patient_sex: None,
            study_date: Some("20000101".into()),
            study_time: None,
            accession_number: Some("A".into()),
            study_description: None,
            referring_physician: None,
            modalities: String::new(),
            series_count: 0,
            instance_count: 0,
            size_bytes: 0,
            status: String::new(),
            storage_tier: String::new(),
            retain_until: None,
            registered_at: String::new(),
            updated_position: 0,
        };
        let shown = ShownStudy::of(&Deidentifier::for_share(secret, uuid::Uuid::nil()), &probe);
        let hashed = |wanted: &Option<String>| {
            wanted
                .as_ref()
                .is_none_or(|w| may_start_with(w, PSEUDONYM_PREFIX))
        };
        let constant = ShownStudy {
            study_uid: String::new(),
            patient_id: None,
            patient_name: None,
            modalities: Vec::new(),
            ..shown
        };
        let keys_left = StudyQuery {
            accession_number: q.accession_number.clone(),
            study_date_from: q.study_date_from.clone(),
            study_date_to: q.study_date_to.clone(),
            regional_patient_id: q.regional_patient_id.clone(),
            ..StudyQuery::default()
        };
        (q.study_uids.is_empty()
            || q.study_uids
                .iter()
                .any(|u| may_start_with(u, MAPPED_UID_ROOT)))
            && hashed(&q.patient_id)
            && hashed(&q.patient_name)
            && constant.matches(&keys_left)
    }

    /// QIDO-RS study matching (as the catalog's SQL matches: wildcards case-insensitive, other
    /// keys exact) on the shown values. A key the view does not show never matches, and the
    /// regional patient is never shown by a de-identified view.
    fn matches(&self, q: &StudyQuery) -> bool {
        let pattern = |wanted: &Option<String>, shown: &Option<String>| match (wanted, shown) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(w), Some(s)) if w.contains(['*', '?']) => wildcard(w, s),
            (Some(w), Some(s)) => w == s,
        };
        let date = |bound: &Option<String>, keep: fn(&str, &str) -> bool| match bound {
            None => true,
            Some(b) => self.study_date.as_deref().is_some_and(|d| keep(d, b)),
        };
        (q.study_uids.is_empty() || q.study_uids.contains(&self.study_uid))
            && pattern(&q.patient_id, &self.patient_id)
            && pattern(&q.patient_name, &self.patient_name)
            && q.accession_number
                .as_ref()
                .is_none_or(|a| self.accession_number.as_ref() == Some(a))
            && date(&q.study_date_from, |d, b| d >= b)
            && date(&q.study_date_to, |d, b| d <= b)
            && q.modality
                .as_ref()
                .is_none_or(|m| self.modalities.contains(m))
            && q.regional_patient_id.is_none()
    }
}

/// DICOM wildcard matching (`*` any run, `?` one character), ASCII case-insensitive like the
/// catalog's `LIKE`.
fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let v: Vec<char> = value.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Greedy matching with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_dicom_says() {
        assert!(wildcard("D*", "Doe^Jane"));
        assert!(wildcard("d*", "Doe^Jane"));
        assert!(!wildcard("E*", "Doe^Jane"));
        assert!(wildcard("?oe*ne", "Doe^Jane"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("?", ""));
        assert!(wildcard("ANON-*", "ANON-0123"));
    }

    fn study() -> CatalogStudy {
        CatalogStudy {
            institution: "h1".into(),
            study_uid: "1.2.3".into(),
            patient_id: Some("MRN-7".into()),
            patient_name: Some("Doe^Jane".into()),
            patient_birth_date: None,
            patient_sex: None,
            study_date: Some("20260202".into()),
            study_time: None,
            accession_number: Some("ACC-1".into()),
            study_description: None,
            referring_physician: None,
            modalities: "CT\\SR".into(),
            series_count: 1,
            instance_count: 1,
            size_bytes: 1,
            status: "stable".into(),
            storage_tier: "hot".into(),
            retain_until: None,
            registered_at: String::new(),
            updated_position: 1,
        }
    }

    #[test]
    fn a_deidentified_study_matches_only_on_what_its_view_shows() {
        let d = Deidentifier::for_share(b"secret", uuid::Uuid::from_u128(7));
        let shown = ShownStudy::of(&d, &study());
        let q = |f: fn(&mut StudyQuery)| {
            let mut q = StudyQuery::default();
            f(&mut q);
            q
        };
        // The removed originals never match.
        let secret: &[u8] = b"secret";
        for removed in [
            q(|q| q.patient_name = Some("D*".into())),
            q(|q| q.patient_name = Some("Doe^Jane".into())),
            q(|q| q.patient_id = Some("MRN-7".into())),
            q(|q| q.patient_id = Some("MRN*".into())),
            q(|q| q.accession_number = Some("ACC-1".into())),
            q(|q| q.study_date_from = Some("20260202".into())),
            q(|q| q.study_date_to = Some("20260202".into())),
            q(|q| q.study_uids = vec!["1.2.3".into()]),
            q(|q| q.regional_patient_id = Some("RP-1".into())),
        ] {
            assert!(
                !shown.matches(&removed),
                "{removed:?} matched a removed value"
            );
            assert!(
                !ShownStudy::may_match(secret, &removed),
                "{removed:?} was looked for among de-identified rows"
            );
        }
        for shown_key in [
            StudyQuery {
                patient_id: Some(d.pseudonym("MRN-7")),
                ..StudyQuery::default()
            },
            q(|q| q.patient_name = Some("anon*".into())),
            q(|q| q.patient_name = Some("*7".into())),
            StudyQuery {
                study_uids: vec!["9.9".into(), d.map_uid("1.2.3")],
                ..StudyQuery::default()
            },
            q(|q| q.modality = Some("CT".into())),
        ] {
            assert!(ShownStudy::may_match(secret, &shown_key), "{shown_key:?}");
        }
        // What the view shows does.
        let mapped = d.map_uid("1.2.3");
        let pseudonym = d.pseudonym("MRN-7");
        assert!(shown.matches(&StudyQuery {
            study_uids: vec![mapped.clone()],
            ..StudyQuery::default()
        }));
        assert!(shown.matches(&StudyQuery {
            patient_id: Some(pseudonym),
            ..StudyQuery::default()
        }));
        assert!(shown.matches(&StudyQuery {
            modality: Some("CT".into()),
            ..StudyQuery::default()
        }));
        assert!(shown.matches(&StudyQuery::default()));
        assert_eq!(shown.study_uid, mapped);
    }
}
