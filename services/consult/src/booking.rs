//! Slots: read from RFC 3339 text that names its offset, and checked against an attendee's other
//! bookings and declared availability.

use chrono::{DateTime, FixedOffset, Utc};
use hub_events::catalog::AvailabilitySlot;
use hub_policies::Slot;
use uuid::Uuid;

/// Why a slot cannot be booked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// `field` is not a usable time, and why.
    Bad { field: &'static str, reason: String },
    /// It overlaps this other consultation.
    Conflict(Uuid),
    /// It lies outside every period the expert declared available.
    Unavailable,
}

/// Reads a time that must carry its offset (`2027-01-31T09:00:00+08:00`): a time without a zone
/// would be guessed, and a guess moves a consultation by hours.
pub fn parse_time(field: &'static str, text: &str) -> Result<DateTime<FixedOffset>, SlotError> {
    DateTime::parse_from_rfc3339(text.trim()).map_err(|e| SlotError::Bad {
        field,
        reason: format!(
            "'{text}' is not an RFC 3339 time with an explicit offset \
             (like 2027-01-31T09:00:00+08:00 or 2027-01-31T01:00:00Z): {e}"
        ),
    })
}

/// A slot from its two ends; returns it in UTC with the offset of its start (`+08:00`).
pub fn parse_slot(starts_at: &str, ends_at: &str) -> Result<(Slot, String), SlotError> {
    let start = parse_time("starts_at", starts_at)?;
    let end = parse_time("ends_at", ends_at)?;
    if end <= start {
        return Err(SlotError::Bad {
            field: "ends_at",
            reason: format!("'{ends_at}' is not after starts_at '{starts_at}'"),
        });
    }
    if end - start > chrono::Duration::hours(24) {
        return Err(SlotError::Bad {
            field: "ends_at",
            reason: "a consultation slot lasts at most 24 hours".into(),
        });
    }
    Ok((
        Slot {
            starts_at: start.with_timezone(&Utc),
            ends_at: end.with_timezone(&Utc),
        },
        start.offset().to_string(),
    ))
}

/// Checks `slot` for one attendee: it must not overlap any of `booked` (their other
/// consultations, `(id, slot)`, the one being moved left out by the caller) and must lie within
/// one of `availability` when any is declared. The first conflict, by start time, is named.
pub fn check(
    slot: &Slot,
    booked: impl IntoIterator<Item = (Uuid, Slot)>,
    availability: &[AvailabilitySlot],
) -> Result<(), SlotError> {
    let mut conflicts: Vec<(Uuid, Slot)> = booked
        .into_iter()
        .filter(|(_, other)| slot.overlaps(other))
        .collect();
    conflicts.sort_by_key(|(id, s)| (s.starts_at, *id));
    if let Some((id, _)) = conflicts.first() {
        return Err(SlotError::Conflict(*id));
    }
    if !availability.is_empty()
        && !availability.iter().any(|a| {
            slot.within(&Slot {
                starts_at: a.starts_at,
                ends_at: a.ends_at,
            })
        })
    {
        return Err(SlotError::Unavailable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_without_zone_is_refused_naming_the_field() {
        let e = parse_slot("2027-01-31T09:00:00", "2027-01-31T10:00:00+08:00").unwrap_err();
        assert!(
            matches!(
                e,
                SlotError::Bad {
                    field: "starts_at",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse_slot("2027-01-31T09:00:00+08:00", "2027-01-31 10:00").unwrap_err();
        assert!(
            matches!(
                e,
                SlotError::Bad {
                    field: "ends_at",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_slot_that_ends_before_it_starts_is_refused() {
        let e = parse_slot("2027-01-31T10:00:00+08:00", "2027-01-31T09:00:00+08:00").unwrap_err();
        assert!(
            matches!(
                e,
                SlotError::Bad {
                    field: "ends_at",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse_slot("2027-01-31T10:00:00+08:00", "2027-01-31T02:00:00Z").unwrap_err();
        assert!(
            matches!(
                e,
                SlotError::Bad {
                    field: "ends_at",
                    ..
                }
            ),
            "same instant: {e:?}"
        );
    }

    #[test]
    fn the_offset_is_kept_and_the_slot_is_in_utc() {
        let (slot, zone) = parse_slot("2027-01-31T09:00:00+08:00", "2027-01-31T10:00:00+08:00")
            .expect("valid slot");
        assert_eq!(zone, "+08:00");
        assert_eq!(slot.starts_at.to_rfc3339(), "2027-01-31T01:00:00+00:00");
    }

    #[test]
    fn back_to_back_slots_do_not_conflict_and_overlaps_name_the_other_consultation() {
        let (a, _) = parse_slot("2027-01-31T09:00:00Z", "2027-01-31T10:00:00Z").expect("slot");
        let (b, _) = parse_slot("2027-01-31T10:00:00Z", "2027-01-31T11:00:00Z").expect("slot");
        let (c, _) = parse_slot("2027-01-31T09:30:00Z", "2027-01-31T10:30:00Z").expect("slot");
        let id = Uuid::now_v7();
        assert_eq!(check(&b, [(id, a)], &[]), Ok(()));
        assert_eq!(check(&c, [(id, a)], &[]), Err(SlotError::Conflict(id)));
    }

    #[test]
    fn declared_availability_bounds_the_slot() {
        let (a, _) = parse_slot("2027-01-31T09:00:00Z", "2027-01-31T12:00:00Z").expect("slot");
        let (inside, _) = parse_slot("2027-01-31T10:00:00Z", "2027-01-31T11:00:00Z").expect("slot");
        let (outside, _) =
            parse_slot("2027-01-31T11:30:00Z", "2027-01-31T12:30:00Z").expect("slot");
        let avail = [AvailabilitySlot {
            starts_at: a.starts_at,
            ends_at: a.ends_at,
        }];
        assert_eq!(check(&inside, [], &avail), Ok(()));
        assert_eq!(check(&outside, [], &avail), Err(SlotError::Unavailable));
    }
}
