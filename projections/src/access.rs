//! The access index: institutions, alliance memberships, patient links, consents, shares and
//! break-the-glass sessions as tables, so a policy-filtered search is an index join over the
//! study catalog (see [`crate::visibility`]) rather than a decision per study.
//!
//! It holds the same facts as `hub_policies::Facts` (the in-memory index single decisions use),
//! projected from the same events; the property test in `tests/access_property.rs` holds the two
//! to the same answers.

use async_trait::async_trait;
use hub_events::catalog::{
    AccessAction, AccessEvent, AllianceEvent, ConsentEvent, Decision, Grantee, InstitutionEvent,
    InstitutionKind, PatientEvent, PurposeOfUse, ShareEvent, ShareScope,
};
use hub_events::{Family, HubEvent, RecordedEvent};
use serde::Serialize;
use sqlx::FromRow;
use sqlx::{AnyConnection, AnyPool};

use crate::runner::Projection;
use crate::sql::Dialect;
use crate::visibility::CONSENTED;

pub struct AccessIndex;

const TABLES: &[(&str, &str)] = &[
    (
        "access_institutions",
        "institution_id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
         ae_titles TEXT NOT NULL, registered_at TEXT NOT NULL",
    ),
    (
        "access_alliances",
        "alliance_id TEXT PRIMARY KEY, name TEXT NOT NULL, lead_institution TEXT NOT NULL",
    ),
    (
        "access_alliance_members",
        "alliance_id TEXT NOT NULL, institution_id TEXT NOT NULL,
         PRIMARY KEY (alliance_id, institution_id)",
    ),
    (
        "access_patient_links",
        "institution_id TEXT NOT NULL, local_patient_id TEXT NOT NULL,
         regional_patient_id TEXT NOT NULL, PRIMARY KEY (institution_id, local_patient_id)",
    ),
    (
        "access_consents",
        "consent_id TEXT PRIMARY KEY, regional_patient_id TEXT NOT NULL,
         institution_id TEXT NOT NULL,
         policy TEXT NOT NULL, -- alliance_metadata | refused
         active BIGINT NOT NULL, by_patient BIGINT NOT NULL",
    ),
    (
        "access_shares",
        "share_id TEXT PRIMARY KEY, owner TEXT NOT NULL, study_uid TEXT NOT NULL,
         series_uid TEXT, grantee_kind TEXT NOT NULL, grantee_id TEXT NOT NULL,
         scope TEXT NOT NULL, purpose TEXT NOT NULL,
         expires_at BIGINT, -- µs since the epoch, NULL = no expiry
         ended TEXT,         -- NULL while granted; 'revoked' or 'expired'
         ended_reason TEXT, granted_by TEXT NOT NULL, granted_at TEXT NOT NULL",
    ),
    (
        "access_break_glass",
        "subject TEXT NOT NULL, -- the user_key: institution and subject
         owner TEXT NOT NULL, study_uid TEXT NOT NULL,
         until BIGINT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (subject, owner, study_uid)",
    ),
    crate::consult_windows::TABLE,
];

const INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS access_members_by_institution
         ON access_alliance_members (institution_id, alliance_id)",
    "CREATE INDEX IF NOT EXISTS access_links_by_regional
         ON access_patient_links (regional_patient_id)",
    "CREATE INDEX IF NOT EXISTS access_consents_by_patient
         ON access_consents (regional_patient_id, active)",
    "CREATE INDEX IF NOT EXISTS access_shares_by_study ON access_shares (owner, study_uid)",
    "CREATE INDEX IF NOT EXISTS access_shares_by_grantee
         ON access_shares (grantee_kind, grantee_id)",
    crate::consult_windows::INDEX,
];

/// A share as the index holds it (for listing a study's shares).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct ShareRow {
    pub share_id: String,
    pub owner: String,
    pub study_uid: String,
    pub series_uid: Option<String>,
    pub grantee_kind: String,
    /// The institution, subject or alliance; for a user, the subject.
    pub grantee_id: String,
    /// For a user grantee, the user's institution.
    #[sqlx(skip)]
    pub grantee_institution: Option<String>,
    pub scope: String,
    pub purpose: String,
    pub expires_at: Option<i64>,
    pub ended: Option<String>,
    pub ended_reason: Option<String>,
    pub granted_by: String,
    pub granted_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct InstitutionRow {
    pub institution_id: String,
    pub name: String,
    pub kind: String,
    pub ae_titles: String,
    pub registered_at: String,
}

/// The serde name of a unit enum variant (`ShareScope::Images` → `images`).
pub(crate) fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn scope_name(scope: ShareScope) -> String {
    name(&scope)
}

pub fn purpose_name(purpose: PurposeOfUse) -> String {
    name(&purpose)
}

fn kind_name(kind: InstitutionKind) -> String {
    name(&kind)
}

/// The separator of [`user_key`]: a control character, which no registered institution id holds
/// (the registry refuses them), so the key splits at its first one unambiguously.
const USER_KEY_SEPARATOR: char = '\u{1f}';

/// A user as the index keys them (user grants, break-the-glass sessions): the institution whose
/// token names the subject, and the subject. A subject alone is no one user.
pub fn user_key(institution: &str, subject: &str) -> String {
    format!("{institution}{USER_KEY_SEPARATOR}{subject}")
}

/// How the index stores a grantee: kind and key. An unscoped (pre-v3) user grant keeps its bare
/// subject under its own kind, which no search matches.
fn grantee_parts(grantee: &Grantee) -> (&'static str, String) {
    match grantee {
        Grantee::Institution(i) => ("institution", i.clone()),
        Grantee::Alliance(a) => ("alliance", a.clone()),
        Grantee::User(u) => ("user", user_key(&u.institution, &u.subject)),
        Grantee::UnscopedUser(u) => ("unscoped_user", u.clone()),
    }
}

/// How much one alliance shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllianceCounts {
    /// Studies of members whose patients consented (visible to the alliance by policy).
    pub by_policy: i64,
    /// Active shares granted to the alliance as a whole.
    pub active_shares: i64,
}

impl AccessIndex {
    /// The alliance's catalog and sharing counts; shares count while active at `now` (the
    /// policy point's clock, so tests that move time see the counts move with it).
    pub async fn alliance_counts(
        pool: &AnyPool,
        alliance_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<AllianceCounts, sqlx::Error> {
        let by_policy: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM study_catalog s
             JOIN access_alliance_members m ON m.institution_id = s.institution
             WHERE m.alliance_id = $1 AND s.status <> 'purged' AND {CONSENTED}",
        ))
        .bind(alliance_id)
        .fetch_one(pool)
        .await?;
        let now = now.timestamp_micros();
        let active_shares: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM access_shares
             WHERE grantee_kind = 'alliance' AND grantee_id = $1 AND ended IS NULL
               AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(alliance_id)
        .bind(now)
        .fetch_one(pool)
        .await?;
        Ok(AllianceCounts {
            by_policy,
            active_shares,
        })
    }

    /// The shares of one study of one owner, oldest first.
    pub async fn shares_of(
        pool: &AnyPool,
        owner: &str,
        study_uid: &str,
    ) -> Result<Vec<ShareRow>, sqlx::Error> {
        let mut rows: Vec<ShareRow> = sqlx::query_as(
            "SELECT * FROM access_shares WHERE owner = $1 AND study_uid = $2 ORDER BY share_id",
        )
        .bind(owner)
        .bind(study_uid)
        .fetch_all(pool)
        .await?;
        for row in rows.iter_mut().filter(|r| r.grantee_kind == "user") {
            if let Some((institution, subject)) = row.grantee_id.split_once(USER_KEY_SEPARATOR) {
                (row.grantee_institution, row.grantee_id) =
                    (Some(institution.to_owned()), subject.to_owned());
            }
        }
        Ok(rows)
    }

    pub async fn institutions(pool: &AnyPool) -> Result<Vec<InstitutionRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM access_institutions ORDER BY institution_id")
            .fetch_all(pool)
            .await
    }

    /// Members of an alliance, sorted.
    pub async fn members(pool: &AnyPool, alliance_id: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT institution_id FROM access_alliance_members WHERE alliance_id = $1
             ORDER BY institution_id",
        )
        .bind(alliance_id)
        .fetch_all(pool)
        .await
    }
}

#[async_trait]
impl Projection for AccessIndex {
    fn name(&self) -> &'static str {
        "access_index"
    }

    /// 2 (issue 24): user grants and break-the-glass sessions keyed by (institution, subject),
    /// consents with their policy and whether the patient or a linking institution recorded
    /// them, consult windows with the owner's approval. Version 1 is dropped and replayed.
    fn version(&self) -> u32 {
        2
    }

    /// Everything `apply` matches below: a study's own events are the catalog's and findings
    /// are their own read model's ...
    fn wants_family(&self, family: Family) -> bool {
        !matches!(family, Family::Study | Family::Diagnosis)
    }

    /// ... and of the audit trail only a permitted break-the-glass changes what may be seen.
    fn wants(&self, event: &HubEvent) -> bool {
        match event {
            HubEvent::Access(AccessEvent::DataAccessed {
                action, decision, ..
            }) => *action == AccessAction::BreakTheGlass && *decision == Decision::Permit,
            _ => true,
        }
    }

    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for (table, columns) in TABLES {
            sqlx::query(&format!("CREATE TABLE IF NOT EXISTS {table} ({columns})"))
                .execute(&mut *conn)
                .await?;
        }
        for index in INDEXES {
            sqlx::query(index).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for (table, _) in TABLES {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        decoded: &HubEvent,
    ) -> Result<(), sqlx::Error> {
        match decoded {
            HubEvent::Institution(InstitutionEvent::InstitutionRegistered {
                institution_id,
                name,
                kind,
                ae_titles,
            }) => {
                sqlx::query(
                    "INSERT INTO access_institutions VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (institution_id) DO NOTHING",
                )
                .bind(institution_id)
                .bind(name)
                .bind(kind_name(*kind))
                .bind(serde_json::to_string(ae_titles).unwrap_or_default())
                .bind(event.recorded_at.to_rfc3339())
                .execute(&mut *conn)
                .await?;
            }
            HubEvent::Alliance(e) => apply_alliance(conn, e).await?,
            HubEvent::Patient(PatientEvent::PatientLinked {
                regional_patient_id,
                institution_id,
                local_patient_id,
                ..
            }) => {
                sqlx::query(
                    "INSERT INTO access_patient_links VALUES ($1, $2, $3)
                     ON CONFLICT (institution_id, local_patient_id)
                     DO UPDATE SET regional_patient_id = excluded.regional_patient_id",
                )
                .bind(institution_id)
                .bind(local_patient_id)
                .bind(regional_patient_id)
                .execute(&mut *conn)
                .await?;
            }
            HubEvent::Patient(PatientEvent::PatientUnlinked {
                institution_id,
                local_patient_id,
                ..
            }) => {
                sqlx::query(
                    "DELETE FROM access_patient_links
                     WHERE institution_id = $1 AND local_patient_id = $2",
                )
                .bind(institution_id)
                .bind(local_patient_id)
                .execute(&mut *conn)
                .await?;
            }
            HubEvent::Consent(ConsentEvent::ConsentRecorded {
                consent_id,
                regional_patient_id,
                institution_id,
                by_patient,
                policy,
                ..
            }) => {
                // As the policy facts: a consent counts when the patient recorded it or the
                // institution had the patient linked when it recorded it; others are not kept.
                sqlx::query(
                    "INSERT INTO access_consents
                     SELECT $1, $2, $3, $4, 1, $5
                     WHERE $6 = 1 OR EXISTS (SELECT 1 FROM access_patient_links
                                             WHERE institution_id = $7 AND regional_patient_id = $8)
                     ON CONFLICT (consent_id) DO NOTHING",
                )
                .bind(consent_id.to_string())
                .bind(regional_patient_id)
                .bind(institution_id)
                .bind(policy.as_str())
                .bind(i64::from(*by_patient))
                .bind(i64::from(*by_patient))
                .bind(institution_id)
                .bind(regional_patient_id)
                .execute(&mut *conn)
                .await?;
            }
            HubEvent::Consent(ConsentEvent::ConsentWithdrawn { consent_id, .. }) => {
                sqlx::query("UPDATE access_consents SET active = 0 WHERE consent_id = $1")
                    .bind(consent_id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            HubEvent::Share(e) => apply_share(conn, event, e).await?,
            HubEvent::Consult(e) => crate::consult_windows::apply(conn, e).await?,
            HubEvent::Access(AccessEvent::DataAccessed {
                subject,
                institution,
                action: AccessAction::BreakTheGlass,
                decision: Decision::Permit,
                owner: Some(owner),
                study_uid: Some(study_uid),
                expires_at: Some(until),
                reason,
                ..
            }) => {
                let until_later =
                    Dialect::of_conn(conn).greatest("access_break_glass.until", "excluded.until");
                sqlx::query(&format!(
                    "INSERT INTO access_break_glass VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (subject, owner, study_uid)
                     DO UPDATE SET until = {until_later}, reason = excluded.reason",
                ))
                .bind(user_key(institution, subject))
                .bind(owner)
                .bind(study_uid)
                .bind(until.timestamp_micros())
                .bind(reason.clone().unwrap_or_default())
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn apply_alliance(conn: &mut AnyConnection, e: &AllianceEvent) -> Result<(), sqlx::Error> {
    match e {
        AllianceEvent::AllianceRegistered {
            alliance_id,
            name,
            lead_institution,
        } => {
            sqlx::query(
                "INSERT INTO access_alliances VALUES ($1, $2, $3) ON CONFLICT (alliance_id) DO NOTHING",
            )
            .bind(alliance_id)
            .bind(name)
            .bind(lead_institution)
            .execute(&mut *conn)
            .await?;
        }
        AllianceEvent::InstitutionJoinedAlliance {
            alliance_id,
            institution_id,
        } => {
            sqlx::query(
                "INSERT INTO access_alliance_members VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(alliance_id)
            .bind(institution_id)
            .execute(&mut *conn)
            .await?;
        }
        AllianceEvent::InstitutionLeftAlliance {
            alliance_id,
            institution_id,
        } => {
            sqlx::query(
                "DELETE FROM access_alliance_members WHERE alliance_id = $1 AND institution_id = $2",
            )
            .bind(alliance_id)
            .bind(institution_id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn apply_share(
    conn: &mut AnyConnection,
    event: &RecordedEvent,
    e: &ShareEvent,
) -> Result<(), sqlx::Error> {
    match e {
        ShareEvent::ShareGranted {
            share_id,
            study_uid,
            series_uid,
            owner,
            grantee,
            scope,
            purpose,
            expires_at,
        } => {
            let (kind, id) = grantee_parts(grantee);
            sqlx::query(
                "INSERT INTO access_shares VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11)
                 ON CONFLICT (share_id) DO NOTHING",
            )
            .bind(share_id.to_string())
            .bind(owner)
            .bind(study_uid)
            .bind(series_uid)
            .bind(kind)
            .bind(id)
            .bind(scope_name(*scope))
            .bind(purpose_name(*purpose))
            .bind(expires_at.map(|t| t.timestamp_micros()))
            .bind(&event.metadata.actor)
            .bind(event.recorded_at.to_rfc3339())
            .execute(&mut *conn)
            .await?;
        }
        ShareEvent::ShareRevoked { share_id, reason } => {
            sqlx::query(
                "UPDATE access_shares SET ended = 'revoked', ended_reason = $1 WHERE share_id = $2",
            )
            .bind(reason)
            .bind(share_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
        ShareEvent::ShareExpired { share_id } => {
            sqlx::query(
                "UPDATE access_shares SET ended = 'expired' WHERE share_id = $1 AND ended IS NULL",
            )
            .bind(share_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
