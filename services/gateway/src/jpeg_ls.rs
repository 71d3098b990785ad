//! JPEG-LS frames (transfer syntaxes 1.2.840.10008.1.2.4.80 lossless and .81 near-lossless),
//! decoded with `pure_jpegls`: dicom-pixeldata reads JPEG-LS only through CharLS, a C++ library
//! whose build needs cmake. The pure-Rust decoder reads single-component (grayscale) streams,
//! which is what CT, MR, CR and DX store as JPEG-LS; a colour JPEG-LS stream is an error naming
//! what is not supported.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

pub const LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub const NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";

/// Whether `transfer_syntax` is JPEG-LS.
pub fn is_jpeg_ls(transfer_syntax: &str) -> bool {
    let ts = transfer_syntax.trim_end_matches('\0');
    ts == LOSSLESS || ts == NEAR_LOSSLESS
}

/// An unsigned integer attribute of `obj`, if present and readable.
pub(crate) fn uint(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<u32> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
}

/// Decodes one frame's JPEG-LS bitstream of `obj` to native pixel data as PS3.5 lays it out in
/// Explicit VR Little Endian: one byte per sample when Bits Allocated is 8, two little-endian
/// bytes when it is 16; signed samples narrower than 16 bits sign-extended.
pub fn decode_frame(obj: &DefaultDicomObject, bitstream: &[u8]) -> Result<Vec<u8>, String> {
    let rows = uint(obj, tags::ROWS).ok_or("the instance has no Rows")?;
    let columns = uint(obj, tags::COLUMNS).ok_or("the instance has no Columns")?;
    let samples_per_pixel = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples_per_pixel != 1 {
        return Err(format!(
            "JPEG-LS with {samples_per_pixel} samples per pixel (colour) is not supported, \
             only single-component (grayscale) JPEG-LS"
        ));
    }
    let bits_allocated = uint(obj, tags::BITS_ALLOCATED).unwrap_or(16);
    let bits_stored = uint(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    let signed = uint(obj, tags::PIXEL_REPRESENTATION) == Some(1);
    // The decoder is a dependency: contain a panic on hostile input as an error.
    let (samples, width, height) = std::panic::catch_unwind(|| {
        jpegls::decode(bitstream, columns, rows).map_err(|e| format!("JPEG-LS: {e}"))
    })
    .map_err(|_| "the JPEG-LS decoder failed on this frame".to_string())??;
    if (width, height) != (columns, rows) {
        return Err(format!(
            "the JPEG-LS frame is {width}x{height}, the instance says {columns}x{rows}"
        ));
    }
    match bits_allocated {
        8 => samples
            .iter()
            .map(|&s| u8::try_from(s).map_err(|_| format!("sample {s} does not fit 8 bits")))
            .collect(),
        16 => {
            let extend = signed && (1..16).contains(&bits_stored);
            let mut out = Vec::with_capacity(samples.len() * 2);
            for &s in &samples {
                let s = if extend {
                    let shift = 16 - bits_stored;
                    (((s << shift) as i16) >> shift) as u16
                } else {
                    s
                };
                out.extend_from_slice(&s.to_le_bytes());
            }
            Ok(out)
        }
        other => Err(format!(
            "JPEG-LS with Bits Allocated {other} is not supported (8 or 16)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::OpenFileOptions;
    use dicom_object::file::ReadPreamble;

    /// A 16-bit grayscale instance header, with `rows` x `columns` and the sign given.
    fn header(rows: u16, columns: u16, bits_stored: u16, signed: bool) -> DefaultDicomObject {
        use dicom_core::value::PrimitiveValue;
        use dicom_core::{DataElement, VR};
        use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
        let mut obj = InMemDicomObject::new_empty();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(us(tags::ROWS, rows));
        obj.put(us(tags::COLUMNS, columns));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
        obj.put(us(tags::BITS_ALLOCATED, 16));
        obj.put(us(tags::BITS_STORED, bits_stored));
        obj.put(us(tags::PIXEL_REPRESENTATION, u16::from(signed)));
        let mut bytes = Vec::new();
        obj.with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.4")
                .media_storage_sop_instance_uid("1.2.3")
                .transfer_syntax(LOSSLESS),
        )
        .expect("meta")
        .write_all(&mut bytes)
        .expect("write");
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Auto)
            .from_reader(&bytes[..])
            .expect("read")
    }

    fn encode(samples: &[u16], w: u32, h: u32, precision: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut opts = jpegls::EncodeOptions::default();
        opts.precision = Some(precision);
        jpegls::encode_with_options(samples, w, h, &opts, &mut out).expect("encode");
        out
    }

    #[test]
    fn a_grayscale_frame_decodes_to_the_very_samples() {
        let samples: Vec<u16> = (0..64u16).map(|i| i * 97 % 4096).collect();
        let obj = header(8, 8, 12, false);
        let native = decode_frame(&obj, &encode(&samples, 8, 8, 12)).expect("decode");
        let expected: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(native, expected);
    }

    #[test]
    fn signed_samples_narrower_than_16_bits_are_sign_extended() {
        // -1 and -2048 as 12-bit two's complement bit patterns.
        let samples = [0x0FFFu16, 0x0800, 0x0001, 0x07FF];
        let obj = header(2, 2, 12, true);
        let native = decode_frame(&obj, &encode(&samples, 2, 2, 12)).expect("decode");
        let values: Vec<i16> = native
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(values, [-1, -2048, 1, 2047]);
    }

    #[test]
    fn garbage_and_a_wrong_size_are_errors_not_panics() {
        let obj = header(8, 8, 12, false);
        assert!(decode_frame(&obj, b"not a JPEG-LS stream").is_err());
        assert!(decode_frame(&obj, &[]).is_err());
        let other_size = encode(&[1u16; 16], 4, 4, 12);
        let e = decode_frame(&obj, &other_size).expect_err("4x4 into 8x8");
        assert!(e.contains("4x4") || e.contains("dimension"), "{e}");
        let full = encode(&[7u16; 64], 8, 8, 12);
        for cut in [2, 10, full.len() / 2, full.len() - 2] {
            assert!(decode_frame(&obj, &full[..cut]).is_err(), "cut at {cut}");
        }
    }
}
