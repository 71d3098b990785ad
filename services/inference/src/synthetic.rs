//! A synthetic head CT series for tests and the benchmark: an ellipse of brain (about 35 HU) in a
//! skull (1000 HU) in air (-1000 HU), with a hyperdense disc (70 HU, like fresh blood) on chosen
//! slices. Stored as 16-bit unsigned with Rescale Intercept -1024, as scanners do.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use hub_events::catalog::{IngestSource, SeriesInstances, StoredInstance, StudyEvent};
use hub_events::{EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, StreamId};
use hub_ingest::BlobStore;

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// A disc of hyperdense tissue: centre (x, y) and radius in pixels, on slices `first..last`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lesion {
    pub x: f32,
    pub y: f32,
    pub radius: f32,
    pub first: usize,
    pub last: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeadCt {
    pub study_uid: String,
    pub series_uid: String,
    pub patient_id: String,
    /// `CT`, or `MR` for a stand-in MR series (same phantom, for benchmarks).
    pub modality: &'static str,
    pub slices: usize,
    /// Rows and columns.
    pub side: usize,
    pub lesion: Option<Lesion>,
}

impl HeadCt {
    /// The SOP Instance UID of slice `index` (0-based).
    pub fn sop_instance_uid(&self, index: usize) -> String {
        format!("{}.{}", self.series_uid, index + 1)
    }

    fn sop_class(&self) -> &'static str {
        if self.modality == "MR" {
            MR_IMAGE_STORAGE
        } else {
            CT_IMAGE_STORAGE
        }
    }

    /// Hounsfield units at (x, y) of slice `index`.
    pub fn hu(&self, index: usize, x: usize, y: usize) -> f32 {
        let c = self.side as f32 / 2.0;
        let (dx, dy) = ((x as f32 - c) / (0.78 * c), (y as f32 - c) / (0.9 * c));
        let r = (dx * dx + dy * dy).sqrt();
        if r > 1.0 {
            return -1000.0;
        }
        if r > 0.93 {
            return 1000.0;
        }
        if let Some(l) = self.lesion
            && (l.first..l.last).contains(&index)
        {
            let (lx, ly) = (x as f32 - l.x, y as f32 - l.y);
            if lx * lx + ly * ly <= l.radius * l.radius {
                return 70.0;
            }
        }
        // Grey matter texture: ±4 HU, deterministic.
        let wobble = ((x * 7 + y * 13 + index * 3) % 9) as f32 - 4.0;
        35.0 + wobble
    }

    /// Slice `index` as a Part 10 file (explicit VR little endian, uncompressed).
    pub fn instance(&self, index: usize) -> Result<Vec<u8>, String> {
        let mut pixels = Vec::with_capacity(self.side * self.side * 2);
        for y in 0..self.side {
            for x in 0..self.side {
                let stored = (self.hu(index, x, y) + 1024.0).clamp(0.0, 65535.0) as u16;
                pixels.extend_from_slice(&stored.to_le_bytes());
            }
        }
        self.instance_with_pixels(index, pixels)
    }

    /// Slice `index` with the given Pixel Data bytes (a test gives it broken ones).
    pub fn instance_with_pixels(&self, index: usize, pixels: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut obj = InMemDicomObject::new_empty();
        let text = |obj: &mut InMemDicomObject, tag, vr, v: String| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        };
        let side = self.side as u16;
        for (tag, vr, v) in [
            (tags::SOP_CLASS_UID, VR::UI, self.sop_class().to_owned()),
            (tags::SOP_INSTANCE_UID, VR::UI, self.sop_instance_uid(index)),
            (tags::STUDY_INSTANCE_UID, VR::UI, self.study_uid.clone()),
            (tags::SERIES_INSTANCE_UID, VR::UI, self.series_uid.clone()),
            (tags::MODALITY, VR::CS, self.modality.into()),
            (tags::BODY_PART_EXAMINED, VR::CS, "HEAD".into()),
            (tags::PATIENT_ID, VR::LO, self.patient_id.clone()),
            (tags::PATIENT_NAME, VR::PN, "SYNTHETIC^HEAD".into()),
            (tags::STUDY_DATE, VR::DA, "20260101".into()),
            (tags::SERIES_NUMBER, VR::IS, "1".into()),
            (tags::INSTANCE_NUMBER, VR::IS, (index + 1).to_string()),
            (
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2".into(),
            ),
            (tags::RESCALE_INTERCEPT, VR::DS, "-1024".into()),
            (tags::RESCALE_SLOPE, VR::DS, "1".into()),
        ] {
            text(&mut obj, tag, vr, v);
        }
        for (tag, v) in [
            (tags::SAMPLES_PER_PIXEL, 1),
            (tags::ROWS, side),
            (tags::COLUMNS, side),
            (tags::BITS_ALLOCATED, 16),
            (tags::BITS_STORED, 16),
            (tags::HIGH_BIT, 15),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(pixels),
        ));
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(self.sop_class())
                    .media_storage_sop_instance_uid(self.sop_instance_uid(index))
                    .implementation_class_uid("1.2.826.0.1.3680043.10.1437.2"),
            )
            .map_err(|e| format!("building the file meta group: {e}"))?;
        let mut out = Vec::with_capacity(self.side * self.side * 2 + 2048);
        file.write_all(&mut out)
            .map_err(|e| format!("encoding a synthetic instance: {e}"))?;
        Ok(out)
    }
}

/// Stores `files` (SOP Instance UID, Part 10 bytes) as one series of `owner`'s study: the blobs,
/// then `StudyRegistered` (when the stream is new) and `InstancesStored`, and `StudyStabilized`
/// when `stabilize`. What ingest would record, without the network (tests and benchmarks).
#[allow(clippy::too_many_arguments)]
pub async fn record_series(
    store: &dyn EventStore,
    blobs: &BlobStore,
    owner: &str,
    study_uid: &str,
    series_uid: &str,
    modality: &str,
    files: Vec<(String, Vec<u8>)>,
    stabilize: bool,
) -> Result<(), String> {
    let mut instances = Vec::new();
    for (n, (sop, bytes)) in files.into_iter().enumerate() {
        let key = format!("studies/{study_uid}/{series_uid}/{sop}.dcm");
        let size_bytes = bytes.len() as u64;
        blobs
            .put_small(&key, bytes::Bytes::from(bytes))
            .await
            .map_err(|e| format!("blob {key}: {e}"))?;
        instances.push(StoredInstance {
            sop_instance_uid: sop,
            sop_class_uid: CT_IMAGE_STORAGE.into(),
            transfer_syntax_uid: EXPLICIT_VR_LITTLE_ENDIAN.into(),
            instance_number: Some(n as i32 + 1),
            blob_key: key,
            size_bytes,
            sha256: String::new(),
        });
    }
    let stream = StreamId::new(Family::Study, study_uid);
    let version = store
        .read_stream(&stream, 1, 1)
        .await
        .map_err(|e| e.to_string())?
        .len();
    let count = instances.len() as u32;
    let mut events = Vec::new();
    if version == 0 {
        events.push(StudyEvent::StudyRegistered {
            study_uid: study_uid.into(),
            owner: owner.into(),
            patient_id: Some("SYNTHETIC".into()),
            patient_name: None,
            patient_birth_date: None,
            patient_sex: None,
            study_date: None,
            study_time: None,
            accession_number: None,
            study_description: None,
            referring_physician: None,
        });
    }
    events.push(StudyEvent::InstancesStored {
        study_uid: study_uid.into(),
        source: IngestSource::StowRs {
            request_id: "synthetic".into(),
        },
        series: vec![SeriesInstances {
            series_uid: series_uid.into(),
            modality: Some(modality.into()),
            series_number: Some(1),
            series_description: None,
            instances,
        }],
    });
    if stabilize {
        events.push(StudyEvent::StudyStabilized {
            study_uid: study_uid.into(),
            series_count: 1,
            instance_count: count,
            modalities: vec![modality.into()],
        });
    }
    let meta = EventMetadata::new(owner, "service:synthetic");
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            events
                .iter()
                .map(|e| HubEvent::from(e.clone()).to_new_event(meta.clone()))
                .collect(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels;

    #[test]
    fn a_synthetic_slice_decodes_back_to_its_hounsfield_units() {
        let ct = HeadCt {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            patient_id: "P".into(),
            modality: "CT",
            slices: 2,
            side: 64,
            lesion: Some(Lesion {
                x: 32.0,
                y: 32.0,
                radius: 4.0,
                first: 1,
                last: 2,
            }),
        };
        let bytes = ct.instance(1).expect("encodes");
        let header = pixels::header(&bytes).expect("header");
        assert_eq!(header.body_part.as_deref(), Some("HEAD"));
        let slices = pixels::decode(&bytes, true, 0).expect("decodes");
        assert_eq!(slices.len(), 1);
        let (frame, slice) = &slices[0];
        assert_eq!((*frame, slice.width, slice.height), (None, 64, 64));
        assert_eq!(slice.values[0], -1000.0);
        assert_eq!(slice.values[32 * 64 + 32], 70.0);
        assert_eq!(slice.values[32 * 64 + 32], ct.hu(1, 32, 32));
    }
}
