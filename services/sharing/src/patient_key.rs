//! Regional patient identities: a keyed hash (HMAC-SHA-256) of the national id, so one patient's
//! studies at every hospital link to the same identity while the national id is never stored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct PatientKey(Vec<u8>);

impl PatientKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> PatientKey {
        PatientKey(secret.into())
    }

    /// `RP-` and 32 hex digits of HMAC-SHA-256(key, national id with spaces removed, upper case).
    pub fn regional_id(&self, national_id: &str) -> String {
        let normalized: String = national_id
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_uppercase)
            .collect();
        // HMAC accepts a key of any length, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(normalized.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("RP-{hex}")
    }
}

impl std::fmt::Debug for PatientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_national_id_gives_the_same_regional_id_and_never_contains_it() {
        let key = PatientKey::new(b"k".to_vec());
        let a = key.regional_id("11010519491231002X");
        assert_eq!(a, key.regional_id(" 11010519491231002x "));
        assert!(!a.contains("11010519491231002"));
        assert_eq!(a.len(), 35);
        assert_ne!(
            a,
            PatientKey::new(b"other".to_vec()).regional_id("11010519491231002X")
        );
    }
}
