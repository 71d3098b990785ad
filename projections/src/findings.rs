//! AI findings per study: one row per (owner, study, model, version) with its outcome, from
//! `AiFindingsRecorded` and `AiInferenceFailed`. The first outcome of a model version is kept (the
//! inference service appends at most one; a second would be a race it already lost).

use async_trait::async_trait;
use hub_events::catalog::{DiagnosisEvent, Finding};
use hub_events::{Family, HubEvent, RecordedEvent};
use serde::Serialize;
use sqlx::FromRow;
use sqlx::{AnyConnection, AnyPool};

use crate::runner::Projection;

pub struct Findings;

/// One model version's outcome on one study.
#[derive(Clone, Debug, PartialEq, Serialize, FromRow)]
pub struct FindingsRow {
    pub owner: String,
    pub study_uid: String,
    pub model_id: String,
    pub model_version: String,
    pub model_sha256: String,
    /// `recorded` or `failed`.
    pub outcome: String,
    pub reason: Option<String>,
    pub inference_ms: Option<i64>,
    pub slices: Option<i64>,
    /// The findings as JSON (an array of `Finding`).
    pub findings: String,
    pub position: i64,
    pub recorded_at: String,
}

impl FindingsRow {
    /// The findings; a row this projection wrote always parses, anything else reads as none.
    pub fn findings(&self) -> Vec<Finding> {
        serde_json::from_str(&self.findings).unwrap_or_default()
    }
}

impl Findings {
    /// Every model's outcome on `owner`'s study, in the order they were recorded.
    pub async fn for_study(
        pool: &AnyPool,
        owner: &str,
        study_uid: &str,
    ) -> Result<Vec<FindingsRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM findings WHERE owner = $1 AND study_uid = $2 ORDER BY position, model_id",
        )
        .bind(owner)
        .bind(study_uid)
        .fetch_all(pool)
        .await
    }
}

#[async_trait]
impl Projection for Findings {
    fn name(&self) -> &'static str {
        "findings"
    }

    fn wants_family(&self, family: Family) -> bool {
        family == Family::Diagnosis
    }

    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS findings (
                 owner         TEXT    NOT NULL,
                 study_uid     TEXT    NOT NULL,
                 model_id      TEXT    NOT NULL,
                 model_version TEXT    NOT NULL,
                 model_sha256  TEXT    NOT NULL,
                 outcome       TEXT    NOT NULL,
                 reason        TEXT,
                 inference_ms  BIGINT,
                 slices        BIGINT,
                 findings      TEXT    NOT NULL,
                 position      BIGINT NOT NULL,
                 recorded_at   TEXT    NOT NULL,
                 PRIMARY KEY (owner, study_uid, model_id, model_version)
             )",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DROP TABLE IF EXISTS findings")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        decoded: &HubEvent,
    ) -> Result<(), sqlx::Error> {
        let HubEvent::Diagnosis(diagnosis) = decoded else {
            return Ok(());
        };
        let row = match diagnosis {
            DiagnosisEvent::AiFindingsRecorded {
                study_uid,
                model_id,
                model_version,
                findings,
                inference_ms,
                model_sha256,
                slices,
            } => (
                study_uid,
                model_id,
                model_version,
                model_sha256,
                "recorded",
                None,
                Some(*inference_ms as i64),
                Some(*slices as i64),
                serde_json::to_string(findings).unwrap_or_else(|_| "[]".into()),
            ),
            DiagnosisEvent::AiInferenceFailed {
                study_uid,
                model_id,
                reason,
                model_version,
                model_sha256,
            } => (
                study_uid,
                model_id,
                model_version,
                model_sha256,
                "failed",
                Some(reason),
                None,
                None,
                "[]".to_owned(),
            ),
            _ => return Ok(()),
        };
        let (study, model, version, sha, outcome, reason, ms, slices, findings) = row;
        sqlx::query(
            "INSERT INTO findings VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT DO NOTHING",
        )
        .bind(&event.metadata.tenant)
        .bind(study)
        .bind(model)
        .bind(version)
        .bind(sha)
        .bind(outcome)
        .bind(reason)
        .bind(ms)
        .bind(slices)
        .bind(findings)
        .bind(event.position as i64)
        .bind(event.recorded_at.to_rfc3339())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
