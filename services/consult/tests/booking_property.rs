//! Random bookings for one expert, each accepted only if the calendar check passes, never
//! overlap.

use chrono::{Duration, TimeZone, Utc};
use hub_consult::booking::check;
use hub_policies::Slot;
use proptest::prelude::*;
use uuid::Uuid;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn accepted_bookings_never_overlap(requests in prop::collection::vec((0i64..48 * 4, 1i64..12), 1..40)) {
        let base = Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).single().expect("time");
        let mut booked: Vec<(Uuid, Slot)> = Vec::new();
        for (start, quarters) in requests {
            let starts_at = base + Duration::minutes(start * 15);
            let slot = Slot { starts_at, ends_at: starts_at + Duration::minutes(quarters * 15) };
            let overlaps_any = booked.iter().any(|(_, b)| b.overlaps(&slot));
            let verdict = check(&slot, booked.iter().copied(), &[]);
            prop_assert_eq!(verdict.is_ok(), !overlaps_any);
            if verdict.is_ok() {
                booked.push((Uuid::now_v7(), slot));
            }
        }
        for (i, (_, a)) in booked.iter().enumerate() {
            for (_, b) in &booked[i + 1..] {
                prop_assert!(!(a.starts_at < b.ends_at && b.starts_at < a.ends_at));
            }
        }
    }
}
