//! De-identification of what a de-identified share serves: the DICOM PS3.15 Annex E **Basic
//! Application Level Confidentiality Profile** applied to DICOM JSON metadata (QIDO-RS results and
//! WADO-RS `/metadata`, the PS3.18 F.2 model) and to Part 10 files (WADO-RS retrieval).
//!
//! One [`Deidentifier`] per share: UIDs are replaced by `2.25` UIDs derived with HMAC-SHA256 from
//! the hub's secret and the share id, so the same original UID maps to the same new UID within a
//! share (studies, series and references stay consistent across instances, metadata and files),
//! to different UIDs in different shares, and cannot be reversed without the secret. The patient
//! gets a pseudonym the same way.
//!
//! What each attribute becomes is the table in [`profile`] (Table E.1-1, Basic Profile column);
//! private attributes are removed; pixel data is kept byte for byte and the transfer syntax is not
//! changed.
//!
//! What it leaves to others: it does not decide who gets de-identified data (the sharing policy
//! does), it does not clean identification burned into pixel data (Clean Pixel Data Option) and
//! implements none of the Annex E options, and it does not rewrite the URLs a DICOMweb answer
//! carries (it removes Retrieve URL; the gateway adds the share's own).

mod json;
mod part10;
pub mod profile;

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// De-identification Method (0012,0063) written into every de-identified data set (LO, ≤ 64).
pub(crate) const METHOD: &str = "PS3.15 Annex E Basic Application Confidentiality Profile";
/// De-identification Method Code Sequence (0012,0064): DCM 113100.
pub(crate) const METHOD_CODE: (&str, &str, &str) =
    ("113100", "DCM", "Basic Application Confidentiality Profile");

/// What every mapped UID starts with: the UUID arc (ISO/IEC 9834-8), see [`Deidentifier::map_uid`].
pub const MAPPED_UID_ROOT: &str = "2.25.";
/// What every patient pseudonym starts with, see [`Deidentifier::pseudonym`].
pub const PSEUDONYM_PREFIX: &str = "ANON-";

/// The per-share key. Cloning is cheap; [`fmt::Debug`] never shows the key.
#[derive(Clone)]
pub struct Deidentifier {
    /// HMAC keyed for UIDs of this share.
    uids: HmacSha256,
    /// HMAC keyed for patient identifiers of this share.
    patients: HmacSha256,
}

impl fmt::Debug for Deidentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deidentifier { .. }")
    }
}

/// Why a Part 10 file could not be de-identified.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DeidError {
    /// The bytes are not a readable DICOM Part 10 file (garbage, truncated, not DICOM).
    #[error("not a readable DICOM Part 10 file: {0}")]
    Unreadable(String),
    /// The de-identified data set could not be encoded again (e.g. a transfer syntax that
    /// dicom-rs can read but not write).
    #[error("the de-identified file cannot be written: {0}")]
    Unwritable(String),
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// HMAC-SHA256 of `message` with an already keyed `mac`.
fn digest(mac: &HmacSha256, message: &[u8]) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A value as compared and hashed: without the padding (spaces, NUL) DICOM encodings add.
pub(crate) fn trimmed(value: &str) -> &str {
    value.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

impl Deidentifier {
    /// `secret` is the hub's de-identification secret, `share` the share id: the same original UID
    /// maps to the same new UID within one share, to different UIDs across shares, and cannot be
    /// reversed without the secret.
    ///
    /// Keys: share key = HMAC-SHA256(secret, "hub-deid/v1/share/" ‖ share id bytes); from it one
    /// key for UIDs and one for patient ids (HMAC of the share key with a label each), so a UID and
    /// a patient id that happen to be equal strings give unrelated outputs.
    pub fn for_share(secret: &[u8], share: uuid::Uuid) -> Deidentifier {
        let mut share_key = keyed(secret);
        share_key.update(b"hub-deid/v1/share/");
        share_key.update(share.as_bytes());
        let share_key = keyed(&share_key.finalize().into_bytes());
        Deidentifier {
            uids: keyed(&digest(&share_key, b"uid")),
            patients: keyed(&digest(&share_key, b"patient")),
        }
    }

    /// "2.25." + decimal of a 128-bit value derived by HMAC-SHA256(key, uid) (first 16 bytes, with
    /// the top bit handling so it is a valid 2.25 UID: no leading zeros; max 64 chars).
    ///
    /// The 2.25 arc is for UUIDs (ISO/IEC 9834-8), so the 16 bytes are made a UUID: version 8
    /// (custom, RFC 9562) and the RFC variant bits are set. The decimal of an integer has no
    /// leading zeros and a 128-bit value has at most 39 digits: at most 44 characters. Padding
    /// (trailing NUL or spaces of the Part 10 encoding) is ignored, so a UID read from a file and
    /// the same UID read from DICOM JSON map alike.
    pub fn map_uid(&self, uid: &str) -> String {
        let hash = digest(&self.uids, trimmed(uid).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes[6] = (bytes[6] & 0x0F) | 0x80; // version 8
        bytes[8] = (bytes[8] & 0x3F) | 0x80; // variant 10xx
        format!("{MAPPED_UID_ROOT}{}", u128::from_be_bytes(bytes))
    }

    /// A pseudonymous patient id for this share, consistent for one patient within the share
    /// ("ANON-" + 16 hex chars of HMAC). Leading and trailing padding is ignored.
    pub fn pseudonym(&self, patient_id: &str) -> String {
        let hash = digest(&self.patients, trimmed(patient_id).as_bytes());
        let mut out = String::with_capacity(21);
        out.push_str(PSEUDONYM_PREFIX);
        for byte in &hash[..8] {
            out.push_str(&format!("{byte:02X}"));
        }
        out
    }

    /// Applies the profile to one DICOM JSON dataset object in place (the object whose keys are
    /// 8-hex-digit tags): removes/empties/replaces per the table, remaps every UI-VR value that the
    /// profile says U (including inside sequences, recursively), removes private tags (odd group),
    /// and adds PatientIdentityRemoved (0012,0062) "YES" and DeidentificationMethod (0012,0063)
    /// naming the profile, and DeidentificationMethodCodeSequence (0012,0064) with code 113100
    /// (DCM, "Basic Application Confidentiality Profile").
    ///
    /// PatientID and PatientName become [`Deidentifier::pseudonym`] of the Patient ID (of the
    /// Patient's Name when there is no Patient ID); dates, times and other values with a D action
    /// become the fixed dummies of [`profile`] (dates 19000101). Works on QIDO study, series and
    /// instance results alike: only the attributes present are touched. An array (a whole QIDO
    /// or `/metadata` answer) is taken as a list of datasets, so that handing over the answer
    /// instead of one dataset cannot leak it.
    ///
    /// Never panics on odd JSON: an element of the table that cannot be interpreted (not an
    /// object, no "vr", a "Value" of the wrong type) is removed; anything else it cannot interpret
    /// is left as it is.
    pub fn json(&self, dataset: &mut serde_json::Value) {
        json::apply(self, dataset)
    }

    /// Rewrites a Part 10 file: same actions on the data set (recursively into sequences), the
    /// file meta's MediaStorageSOPInstanceUID set to the mapped SOP Instance UID, pixel data kept
    /// byte for byte (native or encapsulated), the transfer syntax unchanged. Errors (never
    /// panics) on bytes that are not a readable Part 10 file, with the reason.
    ///
    /// The file meta group is written anew (Annex E.1.1 step 7): a zero preamble, no source,
    /// sending or receiving AE titles, no private information, dicom-rs as the implementation.
    /// The whole file is held in memory while it is rewritten.
    pub fn part10(&self, bytes: &[u8]) -> Result<Vec<u8>, DeidError> {
        part10::apply(self, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[test]
    fn mapped_uids_are_valid_2_25_uids() {
        let deid = Deidentifier::for_share(b"secret", share(1));
        for uid in [
            "1.2.3",
            "",
            "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
            "x",
        ] {
            let mapped = deid.map_uid(uid);
            let digits = mapped.strip_prefix("2.25.").expect("2.25 arc");
            assert!(mapped.len() <= 64, "{mapped}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{mapped}");
            assert!(!digits.starts_with('0') || digits == "0", "{mapped}");
            let value: u128 = digits.parse().unwrap();
            let bytes = value.to_be_bytes();
            assert_eq!(bytes[6] >> 4, 8, "UUID version 8");
            assert_eq!(bytes[8] >> 6, 0b10, "RFC variant");
        }
    }

    #[test]
    fn mapping_is_consistent_within_a_share_and_differs_across_shares_and_secrets() {
        let a = Deidentifier::for_share(b"secret", share(1));
        let a_again = Deidentifier::for_share(b"secret", share(1));
        let b = Deidentifier::for_share(b"secret", share(2));
        let other_secret = Deidentifier::for_share(b"other", share(1));
        assert_eq!(a.map_uid("1.2.3"), a_again.map_uid("1.2.3"));
        assert_eq!(a.map_uid("1.2.3"), a.map_uid("1.2.3\0"), "padding ignored");
        assert_ne!(a.map_uid("1.2.3"), a.map_uid("1.2.4"));
        assert_ne!(a.map_uid("1.2.3"), b.map_uid("1.2.3"));
        assert_ne!(a.map_uid("1.2.3"), other_secret.map_uid("1.2.3"));
        assert_eq!(a.pseudonym("PID1"), a_again.pseudonym("PID1 "));
        assert_ne!(a.pseudonym("PID1"), b.pseudonym("PID1"));
        assert_ne!(a.pseudonym("PID1"), a.pseudonym("PID2"));
    }

    #[test]
    fn pseudonym_is_anon_and_16_hex_digits() {
        let p = Deidentifier::for_share(b"secret", share(1)).pseudonym("12345");
        let hex = p.strip_prefix("ANON-").expect("prefix");
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let deid = Deidentifier::for_share(b"secret", share(1));
        assert_eq!(format!("{deid:?}"), "Deidentifier { .. }");
    }
}
