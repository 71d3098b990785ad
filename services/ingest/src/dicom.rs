//! Reading what ingest needs from a DICOM Part 10 file's header (never the pixel data).

use std::io::Read;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

/// The identifying and descriptive attributes of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceHeader {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i32>,
    pub series_description: Option<String>,
    pub instance_number: Option<i32>,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub study_description: Option<String>,
    pub referring_physician: Option<String>,
}

/// Why an instance's header cannot be used, with the DICOM failure reason to report.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// 0xC000: not a readable DICOM Part 10 file (garbage, truncated header, not DICOM).
    #[error("not a readable DICOM Part 10 file: {0}")]
    Unreadable(String),
    /// 0xA900: readable, but a required attribute is missing or empty.
    #[error("required attribute {0} is missing or empty")]
    Missing(&'static str),
}

impl HeaderError {
    /// The DICOM failure reason (PS3.18 / PS3.4 status codes).
    pub fn failure_reason(&self) -> u16 {
        match self {
            HeaderError::Unreadable(_) => 0xC000,
            HeaderError::Missing(_) => 0xA900,
        }
    }
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let element = obj.element_opt(tag).ok().flatten()?;
    let value = element.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i32> {
    text(obj, tag).and_then(|t| t.parse().ok())
}

/// Parses the header (everything before Pixel Data) of a Part 10 file.
pub fn read_header(source: impl Read) -> Result<InstanceHeader, HeaderError> {
    read_header_and_metadata(source).map(|(h, _)| h)
}

/// The header, and the instance's metadata as DICOM JSON (PS3.18 F.2): every attribute before
/// Pixel Data, for WADO-RS `/metadata`.
pub fn read_header_and_metadata(
    source: impl Read,
) -> Result<(InstanceHeader, serde_json::Value), HeaderError> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .read_until(tags::PIXEL_DATA)
        .from_reader(source)
        .map_err(|e| HeaderError::Unreadable(e.to_string()))?;
    let required = |tag, name| text(&obj, tag).ok_or(HeaderError::Missing(name));
    let meta = obj.meta();
    let transfer_syntax_uid = meta
        .transfer_syntax()
        .trim_end_matches('\0')
        .trim()
        .to_owned();
    let metadata = dicom_json::to_value(&obj)
        .map_err(|e| HeaderError::Unreadable(format!("cannot express as DICOM JSON: {e}")))?;
    let header = InstanceHeader {
        study_uid: required(tags::STUDY_INSTANCE_UID, "StudyInstanceUID (0020,000D)")?,
        series_uid: required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID (0020,000E)")?,
        sop_instance_uid: required(tags::SOP_INSTANCE_UID, "SOPInstanceUID (0008,0018)")?,
        sop_class_uid: required(tags::SOP_CLASS_UID, "SOPClassUID (0008,0016)")?,
        transfer_syntax_uid,
        modality: text(&obj, tags::MODALITY),
        series_number: int(&obj, tags::SERIES_NUMBER),
        series_description: text(&obj, tags::SERIES_DESCRIPTION),
        instance_number: int(&obj, tags::INSTANCE_NUMBER),
        patient_id: text(&obj, tags::PATIENT_ID),
        patient_name: text(&obj, tags::PATIENT_NAME),
        patient_birth_date: text(&obj, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(&obj, tags::PATIENT_SEX),
        study_date: text(&obj, tags::STUDY_DATE),
        study_time: text(&obj, tags::STUDY_TIME),
        accession_number: text(&obj, tags::ACCESSION_NUMBER),
        study_description: text(&obj, tags::STUDY_DESCRIPTION),
        referring_physician: text(&obj, tags::REFERRING_PHYSICIAN_NAME),
    };
    Ok((header, metadata))
}

/// The value bytes (little endian) of the top-level attribute `(group, element)` of a Part 10
/// file, for WADO-RS bulk data; `None` if the instance has no such attribute.
pub fn attribute_bytes(
    part10: &[u8],
    (group, element): (u16, u16),
) -> Result<Option<Vec<u8>>, String> {
    let tag = dicom_core::Tag(group, element);
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Auto);
    if tag < tags::PIXEL_DATA {
        options = options.read_until(tags::PIXEL_DATA);
    }
    let obj = options.from_reader(part10).map_err(|e| e.to_string())?;
    match obj.element_opt(tag) {
        Ok(Some(e)) => e
            .value()
            .to_bytes()
            .map(|b| Some(b.into_owned()))
            .map_err(|e| format!("attribute {tag} has no binary value: {e}")),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Frames of a stored instance, for WADO-RS `/frames`.
#[derive(Debug, PartialEq, Eq)]
pub struct Frames {
    pub transfer_syntax_uid: String,
    /// True when the frames are compressed bitstreams in the stored transfer syntax.
    pub encapsulated: bool,
    pub frames: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("the instance has no pixel data")]
    NoPixelData,
    #[error("frame {requested} does not exist: the instance has {available} frame(s)")]
    NoSuchFrame { requested: u32, available: u32 },
    #[error("the stored instance cannot be read: {0}")]
    Unreadable(String),
}

/// Extracts frames `wanted` (1-based; empty: every frame) of a Part 10 file: native pixel data as little-endian bytes,
/// encapsulated pixel data as the stored bitstream of each frame.
pub fn extract_frames(part10: &[u8], wanted: &[u32]) -> Result<Frames, FrameError> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(part10)
        .map_err(|e| FrameError::Unreadable(e.to_string()))?;
    extract_frames_of(&obj, wanted)
}

/// [`extract_frames`] of a Part 10 file already opened.
pub fn extract_frames_of(
    obj: &dicom_object::DefaultDicomObject,
    wanted: &[u32],
) -> Result<Frames, FrameError> {
    let transfer_syntax_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let pixels = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or(FrameError::NoPixelData)?;
    let count = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
    // No frame named: all of them (bulk data of Pixel Data).
    let all: Vec<u32> = (1..=count).collect();
    let wanted = if wanted.is_empty() { &all[..] } else { wanted };
    for &n in wanted {
        if n == 0 || n > count {
            return Err(FrameError::NoSuchFrame {
                requested: n,
                available: count,
            });
        }
    }
    let value = pixels.value();
    if let Some(fragments) = value.fragments() {
        let per_frame: Vec<Vec<u8>> = if count == 1 {
            vec![fragments.iter().flatten().copied().collect()]
        } else if fragments.len() == count as usize {
            fragments.to_vec()
        } else {
            // Several fragments per frame: the basic offset table says where each frame starts
            // (offsets count item headers of 8 bytes each).
            let table = value.offset_table().unwrap_or(&[]);
            if table.len() != count as usize {
                return Err(FrameError::Unreadable(
                    "multi-fragment frames without a usable basic offset table".into(),
                ));
            }
            let mut starts = Vec::with_capacity(fragments.len());
            let mut at = 0u32;
            for f in fragments {
                starts.push(at);
                at += 8 + f.len() as u32;
            }
            (0..count as usize)
                .map(|i| {
                    let end = table.get(i + 1).copied().unwrap_or(u32::MAX);
                    fragments
                        .iter()
                        .zip(&starts)
                        .filter(|(_, s)| **s >= table[i] && **s < end)
                        .flat_map(|(f, _)| f.iter().copied())
                        .collect()
                })
                .collect()
        };
        return Ok(Frames {
            transfer_syntax_uid,
            encapsulated: true,
            frames: wanted
                .iter()
                .map(|n| per_frame[*n as usize - 1].clone())
                .collect(),
        });
    }
    let bytes = value
        .to_bytes()
        .map_err(|e| FrameError::Unreadable(e.to_string()))?;
    let rows = int(obj, tags::ROWS).unwrap_or(0).max(0) as usize;
    let columns = int(obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
    let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(1) as usize;
    let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(8).max(1) as usize;
    let frame_len = (rows * columns * samples * bits).div_ceil(8);
    if frame_len == 0 || bytes.len() < frame_len * count as usize {
        return Err(FrameError::Unreadable(format!(
            "pixel data holds {} bytes, fewer than {count} frame(s) of {rows}×{columns}×{samples} at {bits} bits",
            bytes.len()
        )));
    }
    Ok(Frames {
        transfer_syntax_uid,
        encapsulated: false,
        frames: wanted
            .iter()
            .map(|n| {
                let start = (*n as usize - 1) * frame_len;
                bytes[start..start + frame_len].to_vec()
            })
            .collect(),
    })
}
