//! The study catalog per institution: one row per study an institution owns, one per series,
//! built from study events. Every write names the tenant (the owning institution) in its
//! predicate, so one hospital's events can never touch another's rows.

use async_trait::async_trait;
use hub_events::catalog::{StorageTier, StudyEvent};
use hub_events::{HubEvent, RecordedEvent};
use serde::Serialize;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

use crate::runner::Projection;

pub struct StudyCatalog;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct CatalogStudy {
    pub institution: String,
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub study_description: Option<String>,
    pub referring_physician: Option<String>,
    /// Distinct modalities, sorted, joined by `\` as in DICOM ModalitiesInStudy.
    pub modalities: String,
    pub series_count: i64,
    pub instance_count: i64,
    pub size_bytes: i64,
    /// `receiving`, `stable` or `purged`.
    pub status: String,
    /// `hot` or `cold`.
    pub storage_tier: String,
    pub retain_until: Option<String>,
    pub registered_at: String,
    pub updated_position: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct CatalogSeries {
    pub institution: String,
    pub study_uid: String,
    pub series_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub instance_count: i64,
    pub size_bytes: i64,
}

/// Study attributes a correction may change, by DICOM keyword.
const CORRECTABLE: &[(&str, &str)] = &[
    ("PatientID", "patient_id"),
    ("PatientName", "patient_name"),
    ("PatientBirthDate", "patient_birth_date"),
    ("PatientSex", "patient_sex"),
    ("StudyDate", "study_date"),
    ("StudyTime", "study_time"),
    ("AccessionNumber", "accession_number"),
    ("StudyDescription", "study_description"),
    ("ReferringPhysicianName", "referring_physician"),
];

fn tier(t: StorageTier) -> &'static str {
    match t {
        StorageTier::Hot => "hot",
        StorageTier::Cold => "cold",
    }
}

impl StudyCatalog {
    /// One page of an institution's studies (newest registration first) and the total count.
    pub async fn list(
        pool: &SqlitePool,
        institution: &str,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<CatalogStudy>, u64), sqlx::Error> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM study_catalog WHERE institution = ?")
                .bind(institution)
                .fetch_one(pool)
                .await?;
        let rows = sqlx::query_as(
            "SELECT * FROM study_catalog WHERE institution = ?
             ORDER BY registered_at DESC, study_uid LIMIT ? OFFSET ?",
        )
        .bind(institution)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
        Ok((rows, total as u64))
    }

    /// The series of one study of one institution.
    pub async fn series(
        pool: &SqlitePool,
        institution: &str,
        study_uid: &str,
    ) -> Result<Vec<CatalogSeries>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM study_catalog_series WHERE institution = ? AND study_uid = ?
             ORDER BY series_number, series_uid",
        )
        .bind(institution)
        .bind(study_uid)
        .fetch_all(pool)
        .await
    }

    /// Every row of the catalog in a fixed order: for comparing a rebuilt model with a live one.
    pub async fn snapshot(
        pool: &SqlitePool,
    ) -> Result<(Vec<CatalogStudy>, Vec<CatalogSeries>), sqlx::Error> {
        let studies = sqlx::query_as("SELECT * FROM study_catalog ORDER BY institution, study_uid")
            .fetch_all(pool)
            .await?;
        let series = sqlx::query_as(
            "SELECT * FROM study_catalog_series ORDER BY institution, study_uid, series_uid",
        )
        .fetch_all(pool)
        .await?;
        Ok((studies, series))
    }
}

#[async_trait]
impl Projection for StudyCatalog {
    fn name(&self) -> &'static str {
        "study_catalog"
    }

    async fn create(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS study_catalog (
                 institution         TEXT    NOT NULL,
                 study_uid           TEXT    NOT NULL,
                 patient_id          TEXT,
                 patient_name        TEXT,
                 patient_birth_date  TEXT,
                 patient_sex         TEXT,
                 study_date          TEXT,
                 study_time          TEXT,
                 accession_number    TEXT,
                 study_description   TEXT,
                 referring_physician TEXT,
                 modalities          TEXT    NOT NULL DEFAULT '',
                 series_count        INTEGER NOT NULL DEFAULT 0,
                 instance_count      INTEGER NOT NULL DEFAULT 0,
                 size_bytes          INTEGER NOT NULL DEFAULT 0,
                 status              TEXT    NOT NULL DEFAULT 'receiving',
                 storage_tier        TEXT    NOT NULL DEFAULT 'hot',
                 retain_until        TEXT,
                 registered_at       TEXT    NOT NULL,
                 updated_position    INTEGER NOT NULL,
                 PRIMARY KEY (institution, study_uid)
             )",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS study_catalog_series (
                 institution        TEXT    NOT NULL,
                 study_uid          TEXT    NOT NULL,
                 series_uid         TEXT    NOT NULL,
                 modality           TEXT,
                 series_number      INTEGER,
                 series_description TEXT,
                 instance_count     INTEGER NOT NULL DEFAULT 0,
                 size_bytes         INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (institution, study_uid, series_uid)
             )",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_tables(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DROP TABLE IF EXISTS study_catalog_series")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DROP TABLE IF EXISTS study_catalog")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
        decoded: &HubEvent,
    ) -> Result<(), sqlx::Error> {
        let HubEvent::Study(study_event) = decoded else {
            return Ok(());
        };
        let tenant = event.metadata.tenant.as_str();
        let position = event.position as i64;
        match study_event {
            StudyEvent::StudyRegistered {
                study_uid,
                patient_id,
                patient_name,
                patient_birth_date,
                patient_sex,
                study_date,
                study_time,
                accession_number,
                study_description,
                referring_physician,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO study_catalog (institution, study_uid, patient_id, patient_name,
                         patient_birth_date, patient_sex, study_date, study_time,
                         accession_number, study_description, referring_physician,
                         registered_at, updated_position)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (institution, study_uid) DO NOTHING",
                )
                .bind(tenant)
                .bind(study_uid)
                .bind(patient_id)
                .bind(patient_name)
                .bind(patient_birth_date)
                .bind(patient_sex)
                .bind(study_date)
                .bind(study_time)
                .bind(accession_number)
                .bind(study_description)
                .bind(referring_physician)
                .bind(event.recorded_at.to_rfc3339())
                .bind(position)
                .execute(&mut *conn)
                .await?;
            }
            StudyEvent::InstancesStored {
                study_uid, series, ..
            } => {
                for s in series {
                    let bytes: u64 = s.instances.iter().map(|i| i.size_bytes).sum();
                    sqlx::query(
                        "INSERT INTO study_catalog_series (institution, study_uid, series_uid,
                             modality, series_number, series_description, instance_count,
                             size_bytes)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (institution, study_uid, series_uid) DO UPDATE SET
                             instance_count = instance_count + excluded.instance_count,
                             size_bytes = size_bytes + excluded.size_bytes,
                             modality = COALESCE(modality, excluded.modality),
                             series_number = COALESCE(series_number, excluded.series_number),
                             series_description =
                                 COALESCE(series_description, excluded.series_description)",
                    )
                    .bind(tenant)
                    .bind(study_uid)
                    .bind(&s.series_uid)
                    .bind(&s.modality)
                    .bind(s.series_number)
                    .bind(&s.series_description)
                    .bind(s.instances.len() as i64)
                    .bind(bytes as i64)
                    .execute(&mut *conn)
                    .await?;
                }
                sqlx::query(
                    "UPDATE study_catalog SET
                         series_count = (SELECT COUNT(*) FROM study_catalog_series s
                             WHERE s.institution = study_catalog.institution
                               AND s.study_uid = study_catalog.study_uid),
                         instance_count = (SELECT COALESCE(SUM(instance_count), 0)
                             FROM study_catalog_series s
                             WHERE s.institution = study_catalog.institution
                               AND s.study_uid = study_catalog.study_uid),
                         size_bytes = (SELECT COALESCE(SUM(size_bytes), 0)
                             FROM study_catalog_series s
                             WHERE s.institution = study_catalog.institution
                               AND s.study_uid = study_catalog.study_uid),
                         modalities = COALESCE((SELECT group_concat(modality, '\\') FROM
                             (SELECT DISTINCT modality FROM study_catalog_series s
                              WHERE s.institution = study_catalog.institution
                                AND s.study_uid = study_catalog.study_uid
                                AND modality IS NOT NULL ORDER BY modality)), ''),
                         status = CASE WHEN status = 'purged' THEN status ELSE 'receiving' END,
                         updated_position = ?
                     WHERE institution = ? AND study_uid = ?",
                )
                .bind(position)
                .bind(tenant)
                .bind(study_uid)
                .execute(&mut *conn)
                .await?;
            }
            StudyEvent::StudyStabilized { study_uid, .. } => {
                set_column(conn, "status", Some("stable"), position, tenant, study_uid).await?;
            }
            StudyEvent::StudyMetadataCorrected {
                study_uid, changes, ..
            } => {
                for (keyword, value) in changes {
                    // Keywords the catalog does not show stay in the event, not in this table.
                    if let Some((_, column)) = CORRECTABLE.iter().find(|(k, _)| k == keyword) {
                        set_column(conn, column, value.as_deref(), position, tenant, study_uid)
                            .await?;
                    }
                }
            }
            StudyEvent::RetentionSet {
                study_uid,
                retain_until,
                ..
            } => {
                let until = retain_until.to_string();
                set_column(
                    conn,
                    "retain_until",
                    Some(&until),
                    position,
                    tenant,
                    study_uid,
                )
                .await?;
            }
            StudyEvent::StorageTierChanged { study_uid, to, .. } => {
                set_column(
                    conn,
                    "storage_tier",
                    Some(tier(*to)),
                    position,
                    tenant,
                    study_uid,
                )
                .await?;
            }
            StudyEvent::StudyPurged { study_uid, .. } => {
                set_column(conn, "status", Some("purged"), position, tenant, study_uid).await?;
            }
        }
        Ok(())
    }
}

/// Sets one column of one study of the tenant. `column` comes from this file, never from input.
async fn set_column(
    conn: &mut SqliteConnection,
    column: &str,
    value: Option<&str>,
    position: i64,
    tenant: &str,
    study_uid: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE study_catalog SET {column} = ?, updated_position = ?
         WHERE institution = ? AND study_uid = ?"
    ))
    .bind(value)
    .bind(position)
    .bind(tenant)
    .bind(study_uid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
