//! `GET /events?after=POS&limit=N`: the global log, in order, one page at a time.

use axum::Json;
use axum::extract::{RawQuery, State};
use hub_events::{HubEvent, Position, RecordedEvent};
use serde::Serialize;
use serde_json::Value;

use crate::GatewayState;
use crate::problem::Problem;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
pub struct EventsQuery {
    pub after: Position,
    pub limit: usize,
}

/// Parses the query string, refusing unknown parameters and bad values with a reason.
pub fn parse_query(raw: Option<&str>) -> Result<EventsQuery, Problem> {
    let mut q = EventsQuery {
        after: 0,
        limit: DEFAULT_LIMIT,
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" => {
                q.after = value.parse().map_err(|_| {
                    Problem::bad_request(format!(
                        "query parameter `after` must be a log position (a whole number ≥ 0), got {value:?}"
                    ))
                })?
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Problem::bad_request(format!(
                            "query parameter `limit` must be a whole number from 1 to {MAX_LIMIT}, got {value:?}"
                        ))
                    })?
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?}; this endpoint takes `after` and `limit`"
                )));
            }
        }
    }
    Ok(q)
}

#[derive(Serialize)]
pub struct EventView {
    #[serde(flatten)]
    pub envelope: RecordedEvent,
    /// The decoded (and upcast) event, or `null` when it cannot be decoded.
    pub data: Option<Value>,
    /// Why it cannot be decoded, naming its position.
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct EventsPage {
    pub events: Vec<EventView>,
    /// Pass as `after` to get the next page.
    pub next_after: Position,
    pub head_position: Position,
}

pub async fn list_events(
    State(state): State<GatewayState>,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventsPage>, Problem> {
    let subject = state.auth.identify(&headers)?;
    state
        .auth
        .require(&subject, hub_policies::Act::ReadEventLog)?;
    let q = parse_query(raw.as_deref())?;
    let unavailable = |e: hub_events::StoreError| Problem::unavailable(e.to_string());
    let events = state
        .store
        .read_all(q.after, q.limit)
        .await
        .map_err(unavailable)?;
    let head = state.store.head().await.map_err(unavailable)?;
    let next_after = events.last().map_or(q.after, |e| e.position);
    let events = events
        .into_iter()
        .map(|e| {
            let (data, error) = match HubEvent::decode(&e) {
                Ok(decoded) => (serde_json::to_value(&decoded).ok(), None),
                Err(err) => (None, Some(err.to_string())),
            };
            EventView {
                envelope: e,
                data,
                error,
            }
        })
        .collect();
    Ok(Json(EventsPage {
        events,
        next_after,
        head_position: head,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_query_defaults_and_bounds() {
        assert_eq!(
            parse_query(None).ok(),
            Some(EventsQuery {
                after: 0,
                limit: 100
            })
        );
        assert_eq!(
            parse_query(Some("after=42&limit=7")).ok(),
            Some(EventsQuery {
                after: 42,
                limit: 7
            })
        );
        for bad in [
            "after=-1",
            "after=x",
            "limit=0",
            "limit=1001",
            "limit=",
            "foo=1",
        ] {
            let p = parse_query(Some(bad)).expect_err(bad);
            assert_eq!(p.status_code, 400);
            assert!(
                p.detail.contains('`') || p.detail.contains("unknown"),
                "{}",
                p.detail
            );
        }
    }
}
