//! The study catalog per institution: one row per study an institution owns, one per series,
//! built from study events. Every write names the tenant (the owning institution) in its
//! predicate, so one hospital's events can never touch another's rows.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use hub_events::catalog::{StorageTier, StudyEvent};
use hub_events::{Family, HubEvent, RecordedEvent};
use hub_policies::Relation;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use sqlx::{AnyConnection, AnyPool};

use crate::runner::Projection;
use crate::sql::{Dialect, Sql};
use crate::visibility::{Reach, Start, Viewer, push_visible, visible_branches};

pub struct StudyCatalog;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, FromRow)]
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

/// The columns of `study_catalog`, as [`CatalogStudy`] names them.
const STUDY_COLUMNS: [&str; 20] = [
    "institution",
    "study_uid",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "accession_number",
    "study_description",
    "referring_physician",
    "modalities",
    "series_count",
    "instance_count",
    "size_bytes",
    "status",
    "storage_tier",
    "retain_until",
    "registered_at",
    "updated_position",
];

/// Search order, newest first.
const SEARCH_ORDER: &str = "study_date DESC, study_uid DESC, institution DESC";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct CatalogInstance {
    pub institution: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub instance_number: Option<i64>,
    pub blob_key: String,
    pub size_bytes: i64,
    pub sha256: String,
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

/// Instances per multi-row insert (10 binds each: well under both engines' bind limits).
const INSTANCE_ROWS_PER_INSERT: usize = 200;

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

/// QIDO-RS study-level matching (PS3.18 §8.3.4), answered from the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StudyQuery {
    pub study_uids: Vec<String>,
    pub patient_id: Option<String>,
    /// May hold `*` and `?` wildcards.
    pub patient_name: Option<String>,
    pub accession_number: Option<String>,
    /// Inclusive `YYYYMMDD` bounds; either may be open.
    pub study_date_from: Option<String>,
    pub study_date_to: Option<String>,
    pub modality: Option<String>,
    /// Studies of one regional patient (every institution's linked local patient ids).
    pub regional_patient_id: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

impl StudyQuery {
    /// Whether it matches every study (only a page is asked for).
    pub fn is_unfiltered(&self) -> bool {
        let StudyQuery {
            study_uids,
            patient_id,
            patient_name,
            accession_number,
            study_date_from,
            study_date_to,
            modality,
            regional_patient_id,
            limit: _,
            offset: _,
        } = self;
        study_uids.is_empty()
            && patient_id.is_none()
            && patient_name.is_none()
            && accession_number.is_none()
            && study_date_from.is_none()
            && study_date_to.is_none()
            && modality.is_none()
            && regional_patient_id.is_none()
    }
}

/// From which offset an unfiltered page of one institution's studies is found through the day
/// counts ([`DeepPage`]) rather than by stepping over the index entries before it.
pub const DEEP_OFFSET: u32 = 1000;

/// Where a deep page of one institution's studies starts: its first study is the
/// `offset`-th (0-based) of `day` in search order. Found from `study_catalog_days` (the studies
/// per institution and StudyDate, purged ones left out) by a running sum over at most one row
/// per day, so a page at offset 90,000 reads a few thousand small rows instead of stepping over
/// 90,000 index entries (measured in SQLite over 100,000 studies on 3,653 days, warm: 0.45 ms
/// to read the days and their counts, against 6 ms to step to offset 50,000 and 12 ms to
/// 100,000).
struct DeepPage {
    day: String,
    offset: u32,
}

impl DeepPage {
    /// `None` when the page does not lie wholly among studies with a StudyDate (those without
    /// come last in SQLite's order, first in PostgreSQL's): the plain search answers it.
    async fn locate(
        pool: &AnyPool,
        institution: &str,
        offset: u32,
        limit: u32,
    ) -> Result<Option<DeepPage>, sqlx::Error> {
        let dialect = Dialect::of_pool(pool);
        let undated: i64 = if dialect.nulls_first_descending() {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM study_catalog
                 WHERE institution = $1 AND study_date IS NULL AND status <> 'purged'",
            )
            .bind(institution)
            .fetch_one(pool)
            .await?
        } else {
            0
        };
        let Some(target) = i64::from(offset).checked_sub(undated).filter(|t| *t >= 0) else {
            return Ok(None);
        };
        let days = day_counts(pool, institution).await?;
        let total: i64 = days.iter().map(|(_, n)| n).sum();
        // The page and the row that says whether more follow, all dated.
        if target + i64::from(limit) + 1 > total {
            return Ok(None);
        }
        // The day the page starts on, newest first. A registration after this read moves the
        // page by one study, as it would move any offset between two requests.
        let mut before = 0;
        for (day, studies) in days.iter() {
            if before + studies > target {
                return Ok(Some(DeepPage {
                    day: day.clone(),
                    offset: u32::try_from(target - before).unwrap_or(u32::MAX),
                }));
            }
            before += studies;
        }
        Ok(None)
    }
}

/// One institution's studies per StudyDate, newest day first.
type DayCounts = Arc<Vec<(String, i64)>>;

/// Institutions whose day counts are kept at most ([`DAY_COUNTS`] starts over past it).
const DAY_COUNTS_KEPT: usize = 256;

/// The day counts last read per (database, institution), with the catalog's checkpoint they
/// were read at. The catalog's changes and its checkpoint are committed together, so while the
/// checkpoint has not moved neither have the counts: a deep page then costs one read of the
/// checkpoint instead of reading and sorting a row per day (3,653 over ten years: 0.5-1.3 ms of
/// SQL, then the decoding and sorting here).
static DAY_COUNTS: LazyLock<Mutex<DayCountCache>> = LazyLock::new(Default::default);

/// (database URL, institution) → (the catalog's checkpoint, its day counts then).
type DayCountCache = HashMap<(String, String), (i64, DayCounts)>;

/// `institution`'s studies per day ([`DAY_COUNTS`], else read with the checkpoint they match).
async fn day_counts(pool: &AnyPool, institution: &str) -> Result<DayCounts, sqlx::Error> {
    let key = (
        pool.connect_options().database_url.to_string(),
        institution.to_owned(),
    );
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = $1")
            .bind(StudyCatalog.name())
            .fetch_optional(pool)
            .await?;
    let cached = |cache: &DayCountCache| {
        cache
            .get(&key)
            .filter(|(at, _)| Some(*at) == position)
            .map(|(_, days)| days.clone())
    };
    if let Some(days) = cached(&DAY_COUNTS.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(days);
    }
    // The days and their counts as one JSON value, with the checkpoint they belong to: sqlx
    // hands rows over one at a time, and a running sum in SQL (a window function) took 5 ms
    // over 3,653 days in SQLite. SQLite orders TEXT by its bytes, as Rust does, so there the
    // days are sorted here: its aggregate ORDER BY sorts in a temporary B-tree (1.5 ms over
    // those days, against 0.45 ms for the unordered array). PostgreSQL may collate by locale:
    // it sorts them.
    let dialect = Dialect::of_pool(pool);
    let order = if dialect == Dialect::Sqlite {
        ""
    } else {
        " ORDER BY study_date DESC"
    };
    let (position, days): (Option<i64>, Option<String>) = sqlx::query_as(&format!(
        "SELECT (SELECT position FROM projection_checkpoints WHERE projection = $1),
                (SELECT {} FROM study_catalog_days WHERE institution = $2 AND studies > 0)",
        dialect.json_array_rows(&["study_date", "studies"], order)
    ))
    .bind(StudyCatalog.name())
    .bind(institution)
    .fetch_one(pool)
    .await?;
    let mut days: Vec<(String, i64)> = match days {
        Some(json) => serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into()))?,
        None => Vec::new(),
    };
    if dialect == Dialect::Sqlite {
        days.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    }
    let days = Arc::new(days);
    if let Some(position) = position {
        let mut cache = DAY_COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        // About 60 KB per institution with ten years of days: kept for a few hundred.
        if cache.len() >= DAY_COUNTS_KEPT && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.insert(key, (position, days.clone()));
    }
    Ok(days)
}

/// Counts the studies of `institution` on `day` again (after a study's date or status changed).
async fn recount_day(
    conn: &mut AnyConnection,
    institution: &str,
    day: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO study_catalog_days (institution, study_date, studies)
         SELECT $1, $2, COUNT(*) FROM study_catalog
         WHERE institution = $3 AND study_date = $4 AND status <> 'purged'
         ON CONFLICT (institution, study_date) DO UPDATE SET studies = excluded.studies",
    )
    .bind(institution)
    .bind(day)
    .bind(institution)
    .bind(day)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The StudyDate of one study of `institution`, if it has one.
async fn study_date_of(
    conn: &mut AnyConnection,
    institution: &str,
    study_uid: &str,
) -> Result<Option<String>, sqlx::Error> {
    let date: Option<Option<String>> = sqlx::query_scalar(
        "SELECT study_date FROM study_catalog WHERE institution = $1 AND study_uid = $2",
    )
    .bind(institution)
    .bind(study_uid)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(date.flatten())
}

/// QIDO-RS matching at series and instance level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub modality: Option<String>,
    pub sop_class_uid: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// A DICOM wildcard pattern as a SQL LIKE pattern (with `\` as the escape character).
fn like_pattern(dicom: &str) -> String {
    let mut out = String::with_capacity(dicom.len());
    for c in dicom.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Pushes ` AND ...` for each matching key of `query`, on study rows aliased `s`.
fn push_study_filter(qb: &mut Sql, query: &StudyQuery) {
    if !query.study_uids.is_empty() {
        qb.push(" AND s.study_uid IN (")
            .bind_list(query.study_uids.iter().cloned())
            .push(")");
    }
    // Without wildcards a match is an equality, which the indexes answer.
    let has_wildcard = |v: &str| v.contains(['*', '?']);
    if let Some(v) = &query.patient_id {
        if has_wildcard(v) {
            let like = format!(" AND s.patient_id {} ", qb.dialect().like());
            qb.push(&like).bind(like_pattern(v)).push(" ESCAPE '\\'");
        } else {
            qb.push(" AND s.patient_id = ").bind(v.clone());
        }
    }
    if let Some(v) = &query.patient_name {
        if has_wildcard(v) {
            let like = format!(" AND s.patient_name {} ", qb.dialect().like());
            qb.push(&like).bind(like_pattern(v)).push(" ESCAPE '\\'");
        } else {
            qb.push(" AND s.patient_name = ").bind(v.clone());
        }
    }
    if let Some(v) = &query.accession_number {
        qb.push(" AND s.accession_number = ").bind(v.clone());
    }
    if let Some(v) = &query.study_date_from {
        qb.push(" AND s.study_date >= ").bind(v.clone());
    }
    if let Some(v) = &query.study_date_to {
        qb.push(" AND s.study_date <= ").bind(v.clone());
    }
    if let Some(v) = &query.regional_patient_id {
        qb.push(
            " AND EXISTS (SELECT 1 FROM access_patient_links l
               WHERE l.institution_id = s.institution AND l.local_patient_id = s.patient_id
                 AND l.regional_patient_id = ",
        )
        .bind(v.clone())
        .push(")");
    }
    if let Some(v) = &query.modality {
        // ModalitiesInStudy is stored `CT\\SR`: match one whole value.
        let position = qb.dialect().position();
        qb.push(" AND ")
            .push(position)
            .push("('\\' || s.modalities || '\\', ")
            .bind(format!("\\{v}\\"))
            .push(") > 0");
    }
}

impl StudyCatalog {
    /// Studies `viewer` may see matching `query`: one page, newest first, and whether more
    /// follow it.
    ///
    /// Each way the policy lets the viewer see a study ([`visible_branches`]) is its own
    /// SELECT, answered by an index; the page is taken from their union in one order. Nothing
    /// counts every match: a count would visit every visible study. Ways that cannot show a
    /// study now ([`Reach`]) are left out; with one left, there is no union to merge.
    ///
    /// The page is found on the keys alone (date, UID, institution: an index holds them, and
    /// the status), then its rows are read: skipping `offset` studies costs index entries,
    /// not table rows.
    pub async fn search(
        pool: &AnyPool,
        viewer: &Viewer,
        query: &StudyQuery,
    ) -> Result<(Vec<CatalogStudy>, bool), sqlx::Error> {
        let keyed = !query.study_uids.is_empty()
            || query
                .patient_id
                .as_deref()
                .is_some_and(|v| !v.starts_with(['*', '?']))
            || query.accession_number.is_some()
            || query.regional_patient_id.is_some()
            || (query.study_date_from.is_some() && query.study_date_to.is_some());
        let start = if keyed {
            Start::Row {
                series_column: None,
            }
        } else {
            Start::Shares
        };
        if viewer.relations.is_empty() || query.limit == 0 {
            return Ok((Vec::new(), false));
        }
        // Only the alliance and share branches can be left out: no probe for a viewer without.
        let may_prune = viewer.relations.iter().any(|r| {
            matches!(
                r,
                Relation::Alliance
                    | Relation::GrantMetadata
                    | Relation::GrantImages
                    | Relation::GrantDeidentified
            )
        });
        let reach = if may_prune {
            Reach::of(pool, viewer).await?
        } else {
            Reach::ALL
        };
        let branches = visible_branches(viewer, start, reach);
        if branches.is_empty() {
            return Ok((Vec::new(), false));
        }
        // One branch, and the viewer has `Own`: it is the institution's own studies, which
        // the day counts cover.
        let deep = if branches.len() == 1
            && viewer.relations.contains(&Relation::Own)
            && query.is_unfiltered()
            && query.offset >= DEEP_OFFSET
        {
            DeepPage::locate(pool, &viewer.institution, query.offset, query.limit).await?
        } else {
            None
        };
        // A compound SELECT ordered as a whole: SQLite merges the branches, each read in this
        // order (from an index where one gives it), and stops once the page is out, so a page
        // costs its offset plus its limit, not every visible study. Only then are the page's
        // rows read, by primary key, in the same statement (one round trip; `CROSS JOIN`
        // keeps SQLite from driving the join from the table).
        let dialect = Dialect::of_pool(pool);
        let mut qb = Sql::new(
            dialect,
            &format!(
                "SELECT {} FROM (SELECT c.* FROM (",
                dialect.json_rows(&STUDY_COLUMNS, SEARCH_ORDER)
            ),
        );
        for (n, branch) in branches.iter().enumerate() {
            if n > 0 {
                qb.push(" UNION ");
            }
            qb.push(
                "SELECT s.study_date, s.study_uid, s.institution FROM study_catalog s
                 WHERE s.status <> 'purged' AND (",
            );
            branch(&mut qb);
            qb.push(")");
            push_study_filter(&mut qb, query);
            if let Some(deep) = &deep {
                qb.push(" AND s.study_date <= ").bind(deep.day.clone());
            }
        }
        let offset = deep.as_ref().map_or(query.offset, |d| d.offset);
        qb.push(" ORDER BY ")
            .push(SEARCH_ORDER)
            .push(" LIMIT ")
            .bind(i64::from(query.limit) + 1)
            .push(" OFFSET ")
            .bind(i64::from(offset))
            .push(
                ") AS k CROSS JOIN study_catalog c
                 WHERE c.institution = k.institution AND c.study_uid = k.study_uid) AS page",
            );
        let mut page: Vec<CatalogStudy> = qb.fetch_json_rows(pool).await?;
        let more = page.len() > query.limit as usize;
        page.truncate(query.limit as usize);
        Ok((page, more))
    }

    /// One page of an institution's studies (newest registration first) and the total count.
    pub async fn list(
        pool: &AnyPool,
        institution: &str,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<CatalogStudy>, u64), sqlx::Error> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM study_catalog WHERE institution = $1")
                .bind(institution)
                .fetch_one(pool)
                .await?;
        let rows = sqlx::query_as(
            "SELECT * FROM study_catalog WHERE institution = $1
             ORDER BY registered_at DESC, study_uid LIMIT $2 OFFSET $3",
        )
        .bind(institution)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(pool)
        .await?;
        Ok((rows, total as u64))
    }

    /// Series `viewer` may see across studies (QIDO-RS `/series`): a page, and whether more
    /// follow it.
    pub async fn search_series(
        pool: &AnyPool,
        viewer: &Viewer,
        query: &SeriesQuery,
    ) -> Result<(Vec<CatalogSeries>, bool), sqlx::Error> {
        let filter = |qb: &mut Sql| {
            qb.push(
                " FROM study_catalog_series x JOIN study_catalog s
                   ON s.institution = x.institution AND s.study_uid = x.study_uid
                 WHERE s.status <> 'purged'",
            );
            push_visible(qb, viewer, Some("x.series_uid"));
            if let Some(v) = &query.study_uid {
                qb.push(" AND x.study_uid = ").bind(v.clone());
            }
            if let Some(v) = &query.series_uid {
                qb.push(" AND x.series_uid = ").bind(v.clone());
            }
            if let Some(v) = &query.modality {
                qb.push(" AND x.modality = ").bind(v.clone());
            }
            if let Some(v) = &query.sop_class_uid {
                qb.push(
                    " AND EXISTS (SELECT 1 FROM study_catalog_instances i
                       WHERE i.institution = x.institution
                         AND i.study_uid = x.study_uid
                         AND i.series_uid = x.series_uid
                         AND i.sop_class_uid = ",
                )
                .bind(v.clone())
                .push(")");
            }
        };
        let mut page = Sql::new(Dialect::of_pool(pool), "SELECT x.*");
        filter(&mut page);
        page.push(" ORDER BY x.study_uid, x.series_number, x.series_uid LIMIT ")
            .bind(i64::from(query.limit) + 1)
            .push(" OFFSET ")
            .bind(i64::from(query.offset));
        let mut rows: Vec<_> = page.fetch_all(pool).await?;
        let more = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        Ok((rows, more))
    }

    /// Instances `viewer` may see across studies (QIDO-RS `/instances`): a page, and whether
    /// more follow it.
    pub async fn search_instances(
        pool: &AnyPool,
        viewer: &Viewer,
        query: &SeriesQuery,
    ) -> Result<(Vec<CatalogInstance>, bool), sqlx::Error> {
        let filter = |qb: &mut Sql| {
            qb.push(
                " FROM study_catalog_instances i JOIN study_catalog s
                   ON s.institution = i.institution AND s.study_uid = i.study_uid
                 WHERE s.status <> 'purged'",
            );
            push_visible(qb, viewer, Some("i.series_uid"));
            if let Some(v) = &query.study_uid {
                qb.push(" AND i.study_uid = ").bind(v.clone());
            }
            if let Some(v) = &query.series_uid {
                qb.push(" AND i.series_uid = ").bind(v.clone());
            }
            if let Some(v) = &query.sop_instance_uid {
                qb.push(" AND i.sop_instance_uid = ").bind(v.clone());
            }
            if let Some(v) = &query.sop_class_uid {
                qb.push(" AND i.sop_class_uid = ").bind(v.clone());
            }
            if let Some(v) = &query.modality {
                qb.push(
                    " AND EXISTS (SELECT 1 FROM study_catalog_series s
                       WHERE s.institution = i.institution AND s.study_uid = i.study_uid
                         AND s.series_uid = i.series_uid AND s.modality = ",
                )
                .bind(v.clone())
                .push(")");
            }
        };
        let mut page = Sql::new(Dialect::of_pool(pool), "SELECT i.*");
        filter(&mut page);
        page.push(
            " ORDER BY i.study_uid, i.series_uid, i.instance_number, i.sop_instance_uid LIMIT ",
        )
        .bind(i64::from(query.limit) + 1)
        .push(" OFFSET ")
        .bind(i64::from(query.offset));
        let mut rows: Vec<_> = page.fetch_all(pool).await?;
        let more = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        Ok((rows, more))
    }

    /// Every institution's row of the study with this UID (two hospitals may hold the same
    /// Study Instance UID), the caller's own first.
    pub async fn holders(
        pool: &AnyPool,
        study_uid: &str,
        own_institution: &str,
    ) -> Result<Vec<CatalogStudy>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM study_catalog WHERE study_uid = $1 AND status <> 'purged'
             ORDER BY institution <> $2, institution",
        )
        .bind(study_uid)
        .bind(own_institution)
        .fetch_all(pool)
        .await
    }

    /// The series of one study of one institution.
    pub async fn series(
        pool: &AnyPool,
        institution: &str,
        study_uid: &str,
    ) -> Result<Vec<CatalogSeries>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM study_catalog_series WHERE institution = $1 AND study_uid = $2
             ORDER BY series_number, series_uid",
        )
        .bind(institution)
        .bind(study_uid)
        .fetch_all(pool)
        .await
    }

    /// The instances of a study (optionally one series, optionally one instance), in order.
    pub async fn instances(
        pool: &AnyPool,
        institution: &str,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_instance_uid: Option<&str>,
    ) -> Result<Vec<CatalogInstance>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM study_catalog_instances
             WHERE institution = $1 AND study_uid = $2
               AND ($3 IS NULL OR series_uid = $4) AND ($5 IS NULL OR sop_instance_uid = $6)
             ORDER BY series_uid, instance_number, sop_instance_uid",
        )
        .bind(institution)
        .bind(study_uid)
        .bind(series_uid)
        .bind(series_uid)
        .bind(sop_instance_uid)
        .bind(sop_instance_uid)
        .fetch_all(pool)
        .await
    }

    /// Every row of the catalog in a fixed order: for comparing a rebuilt model with a live one.
    pub async fn snapshot(
        pool: &AnyPool,
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

    fn wants_family(&self, family: Family) -> bool {
        family == Family::Study
    }

    async fn create(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
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
                 series_count        BIGINT NOT NULL DEFAULT 0,
                 instance_count      BIGINT NOT NULL DEFAULT 0,
                 size_bytes          BIGINT NOT NULL DEFAULT 0,
                 status              TEXT    NOT NULL DEFAULT 'receiving',
                 storage_tier        TEXT    NOT NULL DEFAULT 'hot',
                 retain_until        TEXT,
                 registered_at       TEXT    NOT NULL,
                 updated_position    BIGINT NOT NULL,
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
                 series_number      BIGINT,
                 series_description TEXT,
                 instance_count     BIGINT NOT NULL DEFAULT 0,
                 size_bytes         BIGINT NOT NULL DEFAULT 0,
                 PRIMARY KEY (institution, study_uid, series_uid)
             )",
        )
        .execute(&mut *conn)
        .await?;
        // No (institution, modality) index on series: SQLite would pick it for the modality
        // subquery of InstancesStored and scan every series of the institution per event.
        for index in [
            // An institution's studies in search order, with the status and the modalities:
            // a page is found in the index alone, however deep its offset, and with
            // ModalitiesInStudy without reading a table row per study stepped over (in
            // SQLite, with the catalog larger than the page cache, 3.6 ms to find a page of
            // one modality among eight by the table rows against 0.24 ms in the index).
            // (Replaces `study_catalog_by_date`, which lacked the status, and
            // `study_catalog_by_institution_in_order`, which lacked the modalities.)
            "DROP INDEX IF EXISTS study_catalog_by_date",
            "DROP INDEX IF EXISTS study_catalog_by_institution_in_order",
            "CREATE INDEX IF NOT EXISTS study_catalog_institution_order
                 ON study_catalog (institution, study_date, study_uid, status, modalities)",
            "CREATE INDEX IF NOT EXISTS study_catalog_by_patient
                 ON study_catalog (institution, patient_id)",
            "CREATE INDEX IF NOT EXISTS study_catalog_by_accession
                 ON study_catalog (institution, accession_number)",
            // Searches across institutions (shared studies, patients, alliances).
            "CREATE INDEX IF NOT EXISTS study_catalog_by_uid ON study_catalog (study_uid)",
            // The order of every search, whole: a page walks it and stops after `limit` rows.
            // (Replaces `study_catalog_by_date_all`, which lacked the institution,
            // `study_catalog_in_search_order`, which lacked the status, and
            // `study_catalog_search_order`, which lacked the modalities.)
            "DROP INDEX IF EXISTS study_catalog_by_date_all",
            "DROP INDEX IF EXISTS study_catalog_in_search_order",
            "DROP INDEX IF EXISTS study_catalog_search_order",
            "CREATE INDEX IF NOT EXISTS study_catalog_order
                 ON study_catalog (study_date, study_uid, institution, status, modalities)",
            "CREATE INDEX IF NOT EXISTS study_catalog_by_patient_all
                 ON study_catalog (patient_id)",
            "CREATE INDEX IF NOT EXISTS study_catalog_by_accession_all
                 ON study_catalog (accession_number)",
        ] {
            sqlx::query(index).execute(&mut *conn).await?;
        }
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS study_catalog_days (
                 institution TEXT   NOT NULL,
                 study_date  TEXT   NOT NULL,
                 studies     BIGINT NOT NULL,
                 PRIMARY KEY (institution, study_date)
             ){}",
            Dialect::of_conn(conn).without_rowid()
        ))
        .execute(&mut *conn)
        .await?;
        // A catalog built before the day counts existed gets them from its rows, once.
        let counted: Option<i64> = sqlx::query_scalar("SELECT 1 FROM study_catalog_days LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
        if counted.is_none() {
            sqlx::query(
                "INSERT INTO study_catalog_days (institution, study_date, studies)
                 SELECT institution, study_date, COUNT(*) FROM study_catalog
                 WHERE study_date IS NOT NULL AND status <> 'purged'
                 GROUP BY institution, study_date",
            )
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS study_catalog_instances (
                 institution         TEXT    NOT NULL,
                 study_uid           TEXT    NOT NULL,
                 series_uid          TEXT    NOT NULL,
                 sop_instance_uid    TEXT    NOT NULL,
                 sop_class_uid       TEXT    NOT NULL,
                 transfer_syntax_uid TEXT    NOT NULL,
                 instance_number     BIGINT,
                 blob_key            TEXT    NOT NULL,
                 size_bytes          BIGINT NOT NULL,
                 sha256              TEXT    NOT NULL,
                 PRIMARY KEY (institution, study_uid, series_uid, sop_instance_uid)
             )",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_tables(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DROP TABLE IF EXISTS study_catalog_instances")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DROP TABLE IF EXISTS study_catalog_series")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DROP TABLE IF EXISTS study_catalog_days")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DROP TABLE IF EXISTS study_catalog")
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
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
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
                if let Some(day) = study_date {
                    recount_day(conn, tenant, day).await?;
                }
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
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (institution, study_uid, series_uid) DO UPDATE SET
                             instance_count =
                                 study_catalog_series.instance_count + excluded.instance_count,
                             size_bytes = study_catalog_series.size_bytes + excluded.size_bytes,
                             modality =
                                 COALESCE(study_catalog_series.modality, excluded.modality),
                             series_number = COALESCE(
                                 study_catalog_series.series_number, excluded.series_number),
                             series_description = COALESCE(
                                 study_catalog_series.series_description,
                                 excluded.series_description)",
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
                    // Many rows per statement: a round trip per instance is what a projector
                    // on another machine than its database would pay most for.
                    let dialect = Dialect::of_conn(conn);
                    let (insert_into, ignoring) =
                        dialect.insert_ignoring("study_catalog_instances");
                    for chunk in s.instances.chunks(INSTANCE_ROWS_PER_INSERT) {
                        let mut insert = Sql::new(
                            dialect,
                            &format!(
                                "{insert_into}(institution, study_uid, series_uid,
                                     sop_instance_uid, sop_class_uid, transfer_syntax_uid,
                                     instance_number, blob_key, size_bytes, sha256)
                                 VALUES "
                            ),
                        );
                        for (n, i) in chunk.iter().enumerate() {
                            insert.push(if n == 0 { "(" } else { ", (" });
                            insert
                                .bind(tenant.to_owned())
                                .push(", ")
                                .bind(study_uid.to_owned())
                                .push(", ")
                                .bind(s.series_uid.clone())
                                .push(", ")
                                .bind(i.sop_instance_uid.clone())
                                .push(", ")
                                .bind(i.sop_class_uid.clone())
                                .push(", ")
                                .bind(i.transfer_syntax_uid.clone())
                                .push(", ")
                                .bind(i.instance_number)
                                .push(", ")
                                .bind(i.blob_key.clone())
                                .push(", ")
                                .bind(i.size_bytes as i64)
                                .push(", ")
                                .bind(i.sha256.clone())
                                .push(")");
                        }
                        insert.push(ignoring);
                        insert.execute(conn).await?;
                    }
                }
                // The modalities of the study, sorted, joined by `\`.
                let modalities = Dialect::of_conn(conn).string_agg("m.modality", "'\\'");
                sqlx::query(&format!(
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
                         modalities = COALESCE((SELECT {modalities} FROM
                             (SELECT DISTINCT modality FROM study_catalog_series s
                              WHERE s.institution = study_catalog.institution
                                AND s.study_uid = study_catalog.study_uid
                                AND modality IS NOT NULL ORDER BY modality) AS m), ''),
                         status = CASE WHEN status = 'purged' THEN status ELSE 'receiving' END,
                         updated_position = $1
                     WHERE institution = $2 AND study_uid = $3",
                ))
                .bind(position)
                .bind(tenant)
                .bind(study_uid)
                .execute(&mut *conn)
                .await?;
            }
            StudyEvent::StudyStabilized { study_uid, .. } => {
                // A purged study stays purged (and out of the day counts).
                sqlx::query(
                    "UPDATE study_catalog SET
                         status = CASE WHEN status = 'purged' THEN status ELSE 'stable' END,
                         updated_position = $1
                     WHERE institution = $2 AND study_uid = $3",
                )
                .bind(position)
                .bind(tenant)
                .bind(study_uid)
                .execute(&mut *conn)
                .await?;
            }
            StudyEvent::StudyMetadataCorrected {
                study_uid, changes, ..
            } => {
                let redated = changes.iter().any(|(k, _)| k == "StudyDate");
                let before = if redated {
                    study_date_of(conn, tenant, study_uid).await?
                } else {
                    None
                };
                for (keyword, value) in changes {
                    // Keywords the catalog does not show stay in the event, not in this table.
                    if let Some((_, column)) = CORRECTABLE.iter().find(|(k, _)| k == keyword) {
                        set_column(conn, column, value.as_deref(), position, tenant, study_uid)
                            .await?;
                    }
                }
                if redated {
                    let after = study_date_of(conn, tenant, study_uid).await?;
                    for day in [before, after].into_iter().flatten() {
                        recount_day(conn, tenant, &day).await?;
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
                if let Some(day) = study_date_of(conn, tenant, study_uid).await? {
                    recount_day(conn, tenant, &day).await?;
                }
                // The blobs are gone: nothing is retrievable any more.
                sqlx::query(
                    "DELETE FROM study_catalog_instances WHERE institution = $1 AND study_uid = $2",
                )
                .bind(tenant)
                .bind(study_uid)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// Sets one column of one study of the tenant. `column` comes from this file, never from input.
async fn set_column(
    conn: &mut AnyConnection,
    column: &str,
    value: Option<&str>,
    position: i64,
    tenant: &str,
    study_uid: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE study_catalog SET {column} = $1, updated_position = $2
         WHERE institution = $3 AND study_uid = $4"
    ))
    .bind(value)
    .bind(position)
    .bind(tenant)
    .bind(study_uid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
