//! The audit trail: one row per data-access event (`audit_events`: who, in what role, why, the
//! decision) and one key per study it touched (`audit_trail`: owner, study, event; a query
//! that listed twenty studies leaves twenty), so "who saw this study" is one range of the keys
//! joined to their events. Rows are only ever inserted from events; nothing edits or deletes
//! them except a rebuild from the same events.

use std::time::Duration;

use async_trait::async_trait;
use hub_events::catalog::AccessEvent;
use hub_events::{Family, HubEvent, RecordedEvent};
use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::FromRow;

use crate::access::{name, purpose_name};
use crate::db::{Part, ReadModelDb};
use crate::runner::Projection;
use crate::sql::{Dialect, Sql};

pub struct AuditTrail;

/// How long the audit trail gathers events before it applies them (see [`Projection::gather`]).
/// Every search appends an audit event naming each study it listed, and those rows go into the
/// (owner, study) index at scattered places: applied one event at a time, a page of 100 studies
/// rewrote about 100 index pages per search, and that write traffic (WAL frames, then
/// checkpoints copying them into the file) ran beside the searches on the same disk and cores.
/// Gathered, a page rewritten for one search takes the next searches' rows in the same commit.
/// The event itself is durable in the log before the search is answered; only "who saw this
/// study" lags by up to this much.
pub const AUDIT_GATHER: Duration = Duration::from_secs(1);

/// Rows per multi-row insert into `audit_trail` (3 binds each: well under both engines' bind
/// limits).
const AUDIT_ROWS_PER_INSERT: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct AuditRow {
    pub position: i64,
    pub owner: String,
    pub study_uid: String,
    pub series_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub subject: String,
    pub role: String,
    pub institution: String,
    pub action: String,
    pub purpose: String,
    pub decision: String,
    pub reason: Option<String>,
    pub at: String,
}

impl AuditTrail {
    /// Who accessed `owner`'s study, oldest first.
    pub async fn for_study(
        db: &ReadModelDb,
        owner: &str,
        study_uid: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT t.position, t.owner, t.study_uid, e.series_uid, e.sop_instance_uid,
                    e.subject, e.role, e.institution, e.action, e.purpose, e.decision,
                    e.reason, e.at
             FROM audit_trail t JOIN audit_events e ON e.position = t.position
             WHERE t.owner = $1 AND t.study_uid = $2
             ORDER BY t.position LIMIT $3 OFFSET $4",
        )
        .bind(owner)
        .bind(study_uid)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(db.part(Part::Audit).pool())
        .await
    }
}

#[async_trait]
impl Projection for AuditTrail {
    fn name(&self) -> &'static str {
        "audit_trail"
    }

    /// 2: a row per event in `audit_events` and a three-column key per study in `audit_trail`.
    /// Version 1 (until 2026-12) kept every field of the event in each key row of `audit_trail`
    /// (13 columns per study listed, beside a second B-tree for the key); the runner drops it
    /// and replays the log into this layout.
    fn version(&self) -> u32 {
        2
    }

    fn part(&self) -> Part {
        Part::Audit
    }

    fn wants_family(&self, family: Family) -> bool {
        family == Family::Access
    }

    fn gather(&self) -> Duration {
        AUDIT_GATHER
    }

    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS audit_events (
                 position         BIGINT  NOT NULL PRIMARY KEY,
                 series_uid       TEXT,
                 sop_instance_uid TEXT,
                 subject          TEXT    NOT NULL,
                 role             TEXT    NOT NULL,
                 institution      TEXT    NOT NULL,
                 action           TEXT    NOT NULL,
                 purpose          TEXT    NOT NULL,
                 decision         TEXT    NOT NULL,
                 reason           TEXT,
                 at               TEXT    NOT NULL
             )",
        )
        .execute(&mut *conn)
        .await?;
        let without_rowid = Dialect::of_conn(conn).without_rowid();
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS audit_trail (
                 owner     TEXT   NOT NULL,
                 study_uid TEXT   NOT NULL,
                 position  BIGINT NOT NULL,
                 PRIMARY KEY (owner, study_uid, position)
             ){without_rowid}"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for table in ["audit_trail", "audit_events"] {
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
        let HubEvent::Access(AccessEvent::DataAccessed {
            subject,
            role,
            institution,
            action,
            study_uid,
            series_uid,
            sop_instance_uid,
            purpose,
            decision,
            reason,
            owner,
            results,
            ..
        }) = decoded
        else {
            return Ok(());
        };
        let dialect = Dialect::of_conn(conn);
        let (insert_into, ignoring) = dialect.insert_ignoring("audit_events");
        let mut insert = Sql::new(dialect, &format!("{insert_into}VALUES ("));
        insert
            .bind(event.position as i64)
            .push(", ")
            .bind(series_uid.clone())
            .push(", ")
            .bind(sop_instance_uid.clone())
            .push(", ")
            .bind(subject.clone())
            .push(", ")
            .bind(role.clone())
            .push(", ")
            .bind(institution.clone())
            .push(", ")
            .bind(name(action))
            .push(", ")
            .bind(purpose_name(*purpose))
            .push(", ")
            .bind(name(decision))
            .push(", ")
            .bind(reason.clone())
            .push(", ")
            .bind(event.recorded_at.to_rfc3339())
            .push(")")
            .push(ignoring);
        insert.execute(&mut *conn).await?;

        let mut touched: Vec<(&str, &str)> = Vec::new();
        if let (Some(owner), Some(study)) = (owner, study_uid) {
            touched.push((owner, study));
        }
        touched.extend(
            results
                .iter()
                .map(|r| (r.owner.as_str(), r.study_uid.as_str())),
        );
        // Many rows per statement: a query that listed 100 studies used to cost 100 round
        // trips to the database, each a hand-over to SQLite's worker thread, while the next
        // query was being answered on the same two cores.
        let (insert_into, ignoring) = dialect.insert_ignoring("audit_trail");
        for chunk in touched.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut insert = Sql::new(dialect, &format!("{insert_into}VALUES "));
            for (n, (owner, study)) in chunk.iter().enumerate() {
                insert
                    .push(if n == 0 { "(" } else { ", (" })
                    .bind(owner.to_string())
                    .push(", ")
                    .bind(study.to_string())
                    .push(", ")
                    .bind(event.position as i64)
                    .push(")");
            }
            insert.push(ignoring);
            insert.execute(&mut *conn).await?;
        }
        Ok(())
    }
}
