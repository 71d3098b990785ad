//! From stored Part 10 bytes to greyscale slices, with dicom-pixeldata (the same decoders the
//! gateway renders with: native, RLE, JPEG, JPEG 2000). Every failure is an error naming the
//! instance and frame; a decoder panic on hostile input is contained as an error.

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use crate::preprocess::Slice;

/// What the series filter and the findings need from an instance's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub body_part: Option<String>,
    pub frames: u32,
}

fn open(bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject, String> {
    let options = OpenFileOptions::new().read_preamble(ReadPreamble::Auto);
    let options = if header_only {
        options.read_until(tags::PIXEL_DATA)
    } else {
        options
    };
    options
        .from_reader(bytes)
        .map_err(|e| format!("not a readable DICOM file: {e}"))
}

fn text(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
}

fn frames_of(obj: &DefaultDicomObject) -> u32 {
    text(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Reads the header only (never the pixels).
pub fn header(bytes: &[u8]) -> Result<Header, String> {
    let obj = open(bytes, true)?;
    Ok(Header {
        body_part: text(&obj, tags::BODY_PART_EXAMINED),
        frames: frames_of(&obj),
    })
}

/// Which frames (0-based) of `frames` to score when at most `max` are wanted (0: all): evenly
/// spaced, first and last included.
pub fn sample(frames: usize, max: usize) -> Vec<usize> {
    if max == 0 || frames <= max {
        return (0..frames).collect();
    }
    if max == 1 {
        return vec![frames / 2];
    }
    (0..max)
        .map(|k| (k * (frames - 1) + (max - 1) / 2) / (max - 1))
        .collect()
}

/// Decodes the chosen frames (at most `max_frames`, 0: all) of one instance into greyscale
/// slices, with the Modality LUT applied when `rescale` (CT values become HU). Colour pixels are
/// averaged to grey. Returns each slice with its 1-based frame number (`None` when the instance
/// has one frame).
pub fn decode(
    bytes: &[u8],
    rescale: bool,
    max_frames: usize,
) -> Result<Vec<(Option<u32>, Slice)>, String> {
    let obj = open(bytes, false)?;
    let frames = frames_of(&obj);
    let convert = ConvertOptions::new().with_modality_lut(if rescale {
        ModalityLutOption::Default
    } else {
        ModalityLutOption::None
    });
    let mut out = Vec::new();
    for f in sample(frames as usize, max_frames) {
        let f = f as u32;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pixels = obj.decode_pixel_data_frame(f).map_err(|e| e.to_string())?;
            let (w, h, spp) = (
                pixels.columns() as usize,
                pixels.rows() as usize,
                pixels.samples_per_pixel() as usize,
            );
            let values: Vec<f32> = pixels
                .to_vec_frame_with_options(0, &convert)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((w, h, spp, values))
        }))
        .map_err(|_| "the decoder failed on this pixel data".to_string())
        .and_then(|r| r)
        .map_err(|e| format!("frame {} cannot be decoded: {e}", f + 1))?;
        let (width, height, spp, values) = decoded;
        if width == 0 || height == 0 || spp == 0 || values.len() < width * height * spp {
            return Err(format!(
                "frame {} has {} values for {width}×{height}×{spp}",
                f + 1,
                values.len()
            ));
        }
        let grey = if spp == 1 {
            values[..width * height].to_vec()
        } else {
            values[..width * height * spp]
                .chunks(spp)
                .map(|px| px.iter().sum::<f32>() / spp as f32)
                .collect()
        };
        out.push((
            (frames > 1).then_some(f + 1),
            Slice {
                width,
                height,
                values: grey,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_spreads_frames_evenly_and_keeps_the_ends() {
        assert_eq!(sample(5, 0), vec![0, 1, 2, 3, 4]);
        assert_eq!(sample(3, 8), vec![0, 1, 2]);
        assert_eq!(sample(10, 4), vec![0, 3, 6, 9]);
        assert_eq!(sample(10, 1), vec![5]);
    }

    #[test]
    fn bytes_that_are_not_dicom_are_an_error() {
        let e = decode(b"definitely not DICOM", true, 0).expect_err("refused");
        assert!(e.contains("not a readable DICOM file"), "{e}");
        assert!(header(b"").is_err());
    }
}
