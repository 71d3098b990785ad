//! The consult windows of the access index: one row per (consultation, participant) with the
//! booked slot, whether it is booked and whether the study's owner requested or approved it, so a search shows a study to a participant during its
//! window (from the lead time before it) with one index lookup. The same facts as
//! `hub_policies::ConsultFacts`, projected from the same events.

use hub_events::catalog::ConsultEvent;
use sqlx::AnyConnection;

pub(crate) const TABLE: (&str, &str) = (
    "access_consult_windows",
    "consult_id TEXT NOT NULL, owner TEXT NOT NULL, study_uid TEXT NOT NULL,
     subject TEXT NOT NULL, institution TEXT NOT NULL,
     starts_at BIGINT, ends_at BIGINT, -- µs since the epoch, NULL until a slot is booked
     booked BIGINT NOT NULL,            -- 1 while scheduled or accepted
     expert_institution TEXT NOT NULL,
     approved BIGINT NOT NULL,          -- 1 when the owner requested or approved it
     PRIMARY KEY (consult_id, subject, institution)",
);

pub(crate) const INDEX: &str = "CREATE INDEX IF NOT EXISTS access_consult_windows_by_subject
         ON access_consult_windows (subject, institution, ends_at)";

async fn add_participant(
    conn: &mut AnyConnection,
    consult_id: &str,
    subject: &str,
    institution: &str,
) -> Result<(), sqlx::Error> {
    // A later participant takes the consultation's slot and state from the rows already there.
    sqlx::query(
        "INSERT INTO access_consult_windows
         SELECT consult_id, owner, study_uid, $1, $2, starts_at, ends_at, booked,
                expert_institution, approved
         FROM access_consult_windows WHERE consult_id = $3 LIMIT 1
         ON CONFLICT DO NOTHING",
    )
    .bind(subject)
    .bind(institution)
    .bind(consult_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn apply(conn: &mut AnyConnection, e: &ConsultEvent) -> Result<(), sqlx::Error> {
    match e {
        ConsultEvent::ConsultRequested {
            consult_id,
            study_uid,
            requesting_institution,
            requested_by,
            expert_institution,
            expert,
            owner: Some(owner),
            participants,
            ..
        } => {
            let id = consult_id.to_string();
            sqlx::query(
                "INSERT INTO access_consult_windows
                 VALUES ($1, $2, $3, $4, $5, NULL, NULL, 0, $6, $7)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(owner)
            .bind(study_uid)
            .bind(requested_by)
            .bind(requesting_institution)
            .bind(expert_institution)
            .bind(i64::from(owner == requesting_institution))
            .execute(&mut *conn)
            .await?;
            if let Some(expert) = expert {
                add_participant(conn, &id, expert, expert_institution).await?;
            }
            for p in participants {
                add_participant(conn, &id, &p.user, &p.institution).await?;
            }
        }
        ConsultEvent::ConsultScheduled {
            consult_id,
            starts_at,
            ends_at,
            ..
        } => {
            sqlx::query(
                "UPDATE access_consult_windows SET starts_at = $1, ends_at = $2, booked = 1
                 WHERE consult_id = $3",
            )
            .bind(starts_at.timestamp_micros())
            .bind(ends_at.timestamp_micros())
            .bind(consult_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
        ConsultEvent::ConsultRescheduled {
            consult_id,
            starts_at,
            ends_at,
            ..
        } => {
            sqlx::query(
                "UPDATE access_consult_windows SET starts_at = $1, ends_at = $2 WHERE consult_id = $3",
            )
            .bind(starts_at.timestamp_micros())
            .bind(ends_at.timestamp_micros())
            .bind(consult_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
        ConsultEvent::ConsultAccepted { consult_id, expert } => {
            let id = consult_id.to_string();
            sqlx::query("UPDATE access_consult_windows SET booked = 1 WHERE consult_id = $1")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            // An expert the request did not name joins from the expert institution.
            sqlx::query(
                "INSERT INTO access_consult_windows
                 SELECT consult_id, owner, study_uid, $1, expert_institution, starts_at, ends_at,
                        booked, expert_institution, approved
                 FROM access_consult_windows WHERE consult_id = $2 LIMIT 1
                 ON CONFLICT DO NOTHING",
            )
            .bind(expert)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        }
        ConsultEvent::ConsultApproved { consult_id, .. } => {
            sqlx::query("UPDATE access_consult_windows SET approved = 1 WHERE consult_id = $1")
                .bind(consult_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        ConsultEvent::ConsultDeclined { consult_id, .. }
        | ConsultEvent::ConsultCancelled { consult_id, .. }
        | ConsultEvent::ConsultCompleted { consult_id, .. } => {
            sqlx::query("UPDATE access_consult_windows SET booked = 0 WHERE consult_id = $1")
                .bind(consult_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        _ => {}
    }
    Ok(())
}
