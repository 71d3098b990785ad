//! Serving a de-identified share: responses pass through the PS3.15 Annex E Basic Profile
//! ([`hub_deid::Deidentifier`], keyed per share), and the mapped UIDs a grantee sends back are
//! resolved to the stored ones here, before the policy is asked.

use std::sync::Arc;

use bytes::Bytes;
use hub_deid::Deidentifier;
use hub_policies::{Subject, View};
use hub_projections::StudyCatalog;
use serde_json::Value;

use crate::GatewayState;
use crate::access::Below;
use crate::problem::Problem;

/// The hub's de-identification secret (the per-share keys derive from it).
#[derive(Clone)]
pub struct DeidSecret(pub Arc<Vec<u8>>);

fn deidentifier(state: &GatewayState, share: uuid::Uuid) -> Deidentifier {
    Deidentifier::for_share(&state.deid.0, share)
}

/// Applies the view to one DICOM JSON dataset.
pub fn apply(state: &GatewayState, view: View, json: &mut Value) {
    if let View::Deidentified(share) = view {
        deidentifier(state, share).json(json);
    }
}

/// A UID as the view shows it: mapped with the share's key in a de-identified view.
pub fn map_uid(state: &GatewayState, view: View, uid: &str) -> String {
    match view {
        View::Deidentified(share) => deidentifier(state, share).map_uid(uid),
        View::Full => uid.to_owned(),
    }
}

/// The stored UIDs behind what the caller sent: the same UIDs, unless they are the mapped UIDs of
/// a de-identified share granted to the caller.
pub async fn resolve(
    state: &GatewayState,
    subject: &Subject,
    study: &str,
    below: Below<'_>,
) -> Result<(String, (Option<String>, Option<String>)), Problem> {
    let same = || {
        (
            study.to_owned(),
            (
                below.series.map(str::to_owned),
                below.instance.map(str::to_owned),
            ),
        )
    };
    // Mapped UIDs are `2.25.` UIDs; the original's holders are found by the catalog directly.
    if !study.starts_with(hub_deid::MAPPED_UID_ROOT) {
        return Ok(same());
    }
    let now = state.auth.access().now();
    let candidates: Vec<(uuid::Uuid, String, String)> = state.auth.access().with_facts(|f| {
        f.deidentified_shares_for(subject, now)
            .map(|s| (s.share_id, s.owner.clone(), s.study_uid.clone()))
            .collect()
    });
    for (share, owner, original) in candidates {
        let d = deidentifier(state, share);
        if d.map_uid(&original) != study {
            continue;
        }
        if below.series.is_none() && below.instance.is_none() {
            return Ok((original, (None, None)));
        }
        let instances =
            StudyCatalog::instances(state.read_models.pool(), &owner, &original, None, None)
                .await
                .map_err(|e| Problem::unavailable(format!("study catalog: {e}")))?;
        let series = below.series.and_then(|wanted| {
            instances
                .iter()
                .find(|i| d.map_uid(&i.series_uid) == wanted)
                .map(|i| i.series_uid.clone())
        });
        let instance = below.instance.and_then(|wanted| {
            instances
                .iter()
                .find(|i| d.map_uid(&i.sop_instance_uid) == wanted)
                .map(|i| i.sop_instance_uid.clone())
        });
        // A mapped UID that maps to nothing stays as sent: the lookup then finds nothing (404).
        return Ok((
            original,
            (
                series.or_else(|| below.series.map(str::to_owned)),
                instance.or_else(|| below.instance.map(str::to_owned)),
            ),
        ));
    }
    Ok(same())
}

/// A stored original, de-identified when the view says so (off the async threads).
pub async fn part10(secret: &DeidSecret, view: View, bytes: Bytes) -> std::io::Result<Bytes> {
    let View::Deidentified(share) = view else {
        return Ok(bytes);
    };
    let d = Deidentifier::for_share(&secret.0, share);
    tokio::task::spawn_blocking(move || d.part10(&bytes))
        .await
        .map_err(std::io::Error::other)?
        .map(Bytes::from)
        .map_err(|e| std::io::Error::other(format!("de-identification failed: {e}")))
}
