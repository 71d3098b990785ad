//! The policy filter of a search, as SQL over the access index: one condition per relation the
//! policy lets the caller's role read through (`hub_policies::Engine::relations_permitting`),
//! each answered by an index. A study list therefore shows exactly the studies a single read
//! would permit, computed by joins and not by a loop over studies. Study searches take the
//! conditions apart (one ordered query each, merged); series and instance searches OR them into
//! one row filter ([`push_visible`]).

use crate::sql::Sql;
use hub_policies::Relation;
use sqlx::AnyPool;

/// Who is searching, and through which relations the policy lets them see a study.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    /// The subject id of the token (the regional patient id for a patient).
    pub subject: String,
    pub institution: String,
    /// The relations through which the role may read study metadata, as the policy says.
    pub relations: Vec<Relation>,
    /// Now, in µs since the epoch: grants and break-the-glass sessions end at their instant.
    pub now_micros: i64,
    /// How long before a consultation's slot its participants see the study, in µs.
    pub consult_lead_micros: i64,
}

impl Viewer {
    /// The key of this viewer as a user in the access index (user grants, break-the-glass
    /// sessions): institution and subject, never the subject alone.
    pub fn user_key(&self) -> String {
        crate::access::user_key(&self.institution, &self.subject)
    }

    /// A viewer that sees exactly its own institution's studies (staff, before sharing).
    pub fn own_institution(institution: &str) -> Viewer {
        Viewer {
            subject: String::new(),
            institution: institution.to_owned(),
            relations: vec![Relation::Own],
            now_micros: 0,
            consult_lead_micros: 0,
        }
    }
}

/// Which of a viewer's ways of seeing a study can show any study at this moment. A search
/// leaves out a branch that cannot (no alliance membership, no share to the viewer), so it does
/// not walk the catalog in order to find nothing: an alliance branch tests every study of the
/// catalog in date order, and a union of branches costs a comparison per row it skips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reach {
    /// The viewer's institution is a member of an alliance (the alliance relation and shares
    /// to an alliance).
    pub alliance: bool,
    /// A share names the viewer's institution or the viewer, and has not ended.
    pub direct_shares: bool,
}

impl Reach {
    /// Every branch: where the search does not look first.
    pub(crate) const ALL: Reach = Reach {
        alliance: true,
        direct_shares: true,
    };

    /// Looked up in the access index: two indexed probes in one statement.
    pub(crate) async fn of(pool: &AnyPool, viewer: &Viewer) -> Result<Reach, sqlx::Error> {
        let (alliance, direct_shares): (i64, i64) = sqlx::query_as(
            "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM access_alliance_members
                                            WHERE institution_id = $1)
                         THEN 1 ELSE 0 END AS BIGINT),
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM access_shares g
                            WHERE ((g.grantee_kind = 'institution' AND g.grantee_id = $1)
                                   OR (g.grantee_kind = 'user' AND g.grantee_id = $2))
                              AND g.ended IS NULL)
                         THEN 1 ELSE 0 END AS BIGINT)",
        )
        .bind(&viewer.institution)
        .bind(viewer.user_key())
        .fetch_one(pool)
        .await?;
        Ok(Reach {
            alliance: alliance != 0,
            direct_shares: direct_shares != 0,
        })
    }
}

/// Where a share's condition starts (see [`visible_branches`]).
#[derive(Clone, Copy)]
pub(crate) enum Start<'a> {
    /// From the study row, probing its shares; with `series_column`, a grant of one series
    /// covers only rows of that series.
    Row { series_column: Option<&'a str> },
    /// From the caller's shares.
    Shares,
}

/// One relation's condition, pushed into the query when it is built.
pub(crate) type Clause = Box<dyn Fn(&mut Sql) + Send + Sync>;

/// An open consult window of study row `s` for the participant `(subject, institution)`:
/// pushes the condition with its binds.
fn push_consult_window(qb: &mut Sql, viewer: &Viewer, keyed: bool) {
    if keyed {
        qb.push(
            "EXISTS (SELECT 1 FROM access_consult_windows w
                WHERE w.owner = s.institution AND w.study_uid = s.study_uid AND ",
        );
    } else {
        qb.push(
            "(s.institution, s.study_uid) IN (SELECT w.owner, w.study_uid
                FROM access_consult_windows w WHERE ",
        );
    }
    qb.push("w.subject = ")
        .bind(viewer.subject.clone())
        .push(" AND w.institution = ")
        .bind(viewer.institution.clone())
        .push(" AND w.booked = 1 AND w.approved = 1 AND w.ends_at > ")
        .bind(viewer.now_micros)
        .push(" AND w.starts_at <= ")
        .bind(viewer.now_micros.saturating_add(viewer.consult_lead_micros))
        .push(")");
}

/// Patient consent for the patient of study row `s`: an active `alliance_metadata` consent and
/// no active refusal.
pub(crate) const CONSENTED: &str = "EXISTS (SELECT 1 FROM access_patient_links l
        JOIN access_consents c ON c.regional_patient_id = l.regional_patient_id AND c.active = 1
            AND c.policy = 'alliance_metadata'
        WHERE l.institution_id = s.institution AND l.local_patient_id = s.patient_id
          AND NOT EXISTS (SELECT 1 FROM access_consents r
                          WHERE r.regional_patient_id = l.regional_patient_id AND r.active = 1
                            AND r.policy = 'refused'))";

/// The policy filter of a study search as separate conditions on study rows aliased `s`, one
/// per way of seeing a study, each written so that an index can answer it on its own: a study is
/// visible when any one holds. [`crate::StudyCatalog::search`] runs each as its own ordered,
/// limited query and merges them (a union), so no query has to test every relation on every
/// row. Empty when the caller may see no study.
///
/// `start` says where a share's branch starts: from the study row (each row probed for its
/// shares: when the search also matches a key an index answers, such as a patient, a date range,
/// an accession number or study UIDs, or when the branches are ORed into one row filter) or from
/// the caller's shares.
///
/// `reach` leaves out the branches that cannot show anything now.
pub(crate) fn visible_branches(viewer: &Viewer, start: Start<'_>, reach: Reach) -> Vec<Clause> {
    let keyed = matches!(start, Start::Row { .. });
    let series_column = match start {
        Start::Row { series_column } => series_column.map(str::to_owned),
        Start::Shares => None,
    };
    let mut scopes = Vec::new();
    let mut branches: Vec<Clause> = Vec::new();
    let (inst, subject, user, now) = (
        viewer.institution.clone(),
        viewer.subject.clone(),
        viewer.user_key(),
        viewer.now_micros,
    );
    for relation in &viewer.relations {
        let (inst, subject, user) = (inst.clone(), subject.clone(), user.clone());
        match relation {
            Relation::Any => branches.push(Box::new(|qb| {
                qb.push("TRUE");
            })),
            Relation::Own => branches.push(Box::new(move |qb| {
                qb.push("s.institution = ").bind(inst.clone());
            })),
            // The alliance's hospitals hold a large part of the catalog: walking the date index
            // and testing each row (`+` keeps the institution index out) finds a page sooner
            // than sorting every study of every member.
            Relation::Alliance if !reach.alliance => {}
            Relation::Alliance => branches.push(Box::new(move |qb| {
                let institution = qb.dialect().not_indexed("s.institution");
                qb.push(&institution)
                    .push(
                        " IN (SELECT mo.institution_id FROM access_alliance_members mo
                        JOIN access_alliance_members mc ON mc.alliance_id = mo.alliance_id
                        WHERE mc.institution_id = ",
                    )
                    .bind(inst.clone())
                    .push(") AND ")
                    .push(CONSENTED);
            })),
            Relation::GrantMetadata => scopes.push("metadata"),
            Relation::GrantImages => scopes.push("images"),
            Relation::GrantDeidentified => scopes.push("deidentified"),
            Relation::Consult => {
                let viewer = viewer.clone();
                branches.push(Box::new(move |qb| push_consult_window(qb, &viewer, keyed)));
            }
            Relation::Patient => branches.push(Box::new(move |qb| {
                qb.push(
                    "(s.institution, s.patient_id) IN (SELECT institution_id, local_patient_id
                        FROM access_patient_links WHERE regional_patient_id = ",
                )
                .bind(subject.clone())
                .push(")");
            })),
            Relation::BreakGlass => branches.push(Box::new(move |qb| {
                qb.push(
                    "(s.institution, s.study_uid) IN (SELECT owner, study_uid
                        FROM access_break_glass WHERE subject = ",
                )
                .bind(user.clone())
                .push(" AND until > ")
                .bind(now)
                .push(")");
            })),
        }
    }
    if scopes.is_empty() {
        return branches;
    }
    let active = move |qb: &mut Sql, scopes: &[&'static str]| {
        qb.push(" AND g.ended IS NULL AND (g.expires_at IS NULL OR g.expires_at > ")
            .bind(now)
            .push(") AND g.scope IN (");
        qb.bind_list(scopes.iter().copied()).push(")");
    };
    // `(s.institution, s.study_uid) IN (shares ...)` starts from the shares; `EXISTS (shares of
    // this study ...)` probes the study's shares.
    let shares_of = move |qb: &mut Sql| {
        if keyed {
            qb.push(
                "EXISTS (SELECT 1 FROM access_shares g
                    WHERE g.owner = s.institution AND g.study_uid = s.study_uid AND ",
            );
            if let Some(column) = &series_column {
                qb.push("(g.series_uid IS NULL OR g.series_uid = ")
                    .push(column.as_str())
                    .push(") AND ");
            }
        } else {
            qb.push(
                "(s.institution, s.study_uid) IN (SELECT g.owner, g.study_uid FROM access_shares g
                    WHERE ",
            );
        }
    };
    // Shares to the caller's institution or to the caller.
    let (direct_scopes, direct_inst, direct_user) = (scopes.clone(), inst.clone(), user);
    let direct_shares_of = shares_of.clone();
    if reach.direct_shares {
        branches.push(Box::new(move |qb| {
            direct_shares_of(qb);
            qb.push("((g.grantee_kind = 'institution' AND g.grantee_id = ")
                .bind(direct_inst.clone())
                .push(") OR (g.grantee_kind = 'user' AND g.grantee_id = ")
                .bind(direct_user.clone())
                .push("))");
            active(qb, &direct_scopes);
            qb.push(")");
        }));
    }
    if !reach.alliance {
        return branches;
    }
    // Shares to an alliance of the caller's institution, for consenting patients.
    branches.push(Box::new(move |qb| {
        shares_of(qb);
        qb.push(
            "g.grantee_kind = 'alliance' AND g.grantee_id IN
                (SELECT alliance_id FROM access_alliance_members WHERE institution_id = ",
        )
        .bind(inst.clone())
        .push(")");
        active(qb, &scopes);
        qb.push(") AND ").push(CONSENTED);
    }));
    branches
}

/// Pushes ` AND (<visible>)` for study rows aliased `s` (columns `institution`, `study_uid`,
/// `patient_id`): any one of [`visible_branches`], each probed per row. With `series_column`, a
/// grant on one series covers only rows of that series.
pub fn push_visible(qb: &mut Sql, viewer: &Viewer, series_column: Option<&str>) {
    let branches = visible_branches(viewer, Start::Row { series_column }, Reach::ALL);
    qb.push(" AND (");
    if branches.is_empty() {
        qb.push("FALSE");
    }
    for (n, branch) in branches.iter().enumerate() {
        if n > 0 {
            qb.push(" OR ");
        }
        branch(qb);
    }
    qb.push(")");
}
