//! WADO-RS rendered resources (PS3.18 §8.3.5.1.3): `/rendered` and `/thumbnail` as PNG or JPEG,
//! with window center and width, decoded with dicom-pixeldata (JPEG-LS with
//! [`crate::jpeg_ls`]). A frame the decoder cannot read
//! is a 422 problem with the decoder's reason, never a panic.

use std::io::Cursor;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption, WindowLevel};
use image::ImageFormat;
use image::codecs::jpeg::JpegEncoder;

const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// The largest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg { quality: u8 },
    Png,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jpeg { .. } => "image/jpeg",
            Format::Png => "image/png",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RenderOptions {
    /// 1-based.
    pub frame: u32,
    pub window: Option<WindowLevel>,
    /// Fit within this many pixels (width, height), keeping the aspect ratio.
    pub viewport: Option<(u32, u32)>,
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the stored instance cannot be read: {0}")]
    Unreadable(String),
    #[error("frame {0} cannot be decoded: {1}")]
    Undecodable(u32, String),
    #[error("frame {requested} does not exist: the instance has {available} frame(s)")]
    NoSuchFrame { requested: u32, available: u32 },
    #[error("encoding the image failed: {0}")]
    Encode(String),
}

/// A Part 10 file opened whole, and its number of frames.
fn open(part10: &[u8]) -> Result<(DefaultDicomObject, u32), RenderError> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(part10)
        .map_err(|e| RenderError::Unreadable(e.to_string()))?;
    let frames = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok()?.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Ok((obj, frames))
}

/// The stored bitstream of frame `frame` (1-based) of an opened encapsulated instance.
fn bitstream(obj: &DefaultDicomObject, frame: u32) -> Result<Vec<u8>, RenderError> {
    hub_ingest::dicom::extract_frames_of(obj, &[frame])
        .map_err(|e| RenderError::Undecodable(frame, e.to_string()))?
        .frames
        .pop()
        .ok_or_else(|| RenderError::Undecodable(frame, "no such frame".into()))
}

/// For a JPEG-LS original, `obj` with frame `frame` (1-based) decoded in place of its pixel
/// data, as a one-frame native instance, so dicom-pixeldata renders it as any other; and the
/// 0-based index of that frame in what is returned.
fn native_for_rendering(
    mut obj: DefaultDicomObject,
    frame: u32,
) -> Result<(DefaultDicomObject, u32), RenderError> {
    if !crate::jpeg_ls::is_jpeg_ls(obj.meta().transfer_syntax()) {
        return Ok((obj, frame - 1));
    }
    let native = crate::jpeg_ls::decode_frame(&obj, &bitstream(&obj, frame)?)
        .map_err(|e| RenderError::Undecodable(frame, e))?;
    // One byte per sample with Bits Allocated 8 (`decode_frame` refuses all but 8 and 16).
    let vr = if crate::jpeg_ls::uint(&obj, tags::BITS_ALLOCATED) == Some(8) {
        VR::OB
    } else {
        VR::OW
    };
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        vr,
        PrimitiveValue::from(native),
    ));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("1"),
    ));
    obj.meta_mut().transfer_syntax = EXPLICIT_VR_LITTLE_ENDIAN.to_owned();
    Ok((obj, 0))
}

/// Renders one frame of a Part 10 file to PNG or JPEG bytes.
pub fn render(part10: &[u8], options: &RenderOptions) -> Result<Vec<u8>, RenderError> {
    let (obj, frames) = open(part10)?;
    if options.frame == 0 || options.frame > frames {
        return Err(RenderError::NoSuchFrame {
            requested: options.frame,
            available: frames,
        });
    }
    let (obj, index) = native_for_rendering(obj, options.frame)?;
    // The decoder may panic on hostile input in a dependency: contain it as an error.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        obj.decode_pixel_data_frame(index)
            .map_err(|e| e.to_string())
            .and_then(|pixels| {
                let voi = match options.window {
                    Some(w) => VoiLutOption::Custom(w),
                    None => VoiLutOption::First,
                };
                let convert = ConvertOptions::new().with_voi_lut(voi).force_8bit();
                pixels
                    .to_dynamic_image_with_options(0, &convert)
                    .map_err(|e| e.to_string())
            })
    }))
    .map_err(|_| "the decoder failed on this pixel data".to_string())
    .and_then(|r| r)
    .map_err(|e| RenderError::Undecodable(options.frame, e))?;
    let image = match options.viewport {
        Some((w, h)) if decoded.width() > w || decoded.height() > h => decoded.thumbnail(w, h),
        _ => decoded,
    };
    let mut out = Vec::new();
    match options.format {
        Format::Png => image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .map_err(|e| RenderError::Encode(e.to_string()))?,
        Format::Jpeg { quality } => {
            // JPEG has no alpha and no 16-bit: render as 8-bit gray or RGB.
            let image = if image.color().has_color() {
                image::DynamicImage::ImageRgb8(image.to_rgb8())
            } else {
                image::DynamicImage::ImageLuma8(image.to_luma8())
            };
            image
                .write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))
                .map_err(|e| RenderError::Encode(e.to_string()))?
        }
    }
    Ok(out)
}

/// Decodes frames (1-based) of a Part 10 file to native pixel data: little endian samples,
/// interleaved per pixel, as PS3.18 serves `application/octet-stream` frames in Explicit VR
/// Little Endian. Colour frames of YBR JPEG come back as RGB (the decoder converts them).
pub fn decode_frames(part10: &[u8], wanted: &[u32]) -> Result<Vec<Vec<u8>>, RenderError> {
    let (obj, available) = open(part10)?;
    // No frame named: all of them (bulk data of Pixel Data).
    let all: Vec<u32> = (1..=available).collect();
    let wanted = if wanted.is_empty() { &all[..] } else { wanted };
    let jpeg_ls = crate::jpeg_ls::is_jpeg_ls(obj.meta().transfer_syntax());
    wanted
        .iter()
        .map(|&frame| {
            if frame == 0 || frame > available {
                return Err(RenderError::NoSuchFrame {
                    requested: frame,
                    available,
                });
            }
            if jpeg_ls {
                return crate::jpeg_ls::decode_frame(&obj, &bitstream(&obj, frame)?)
                    .map_err(|e| RenderError::Undecodable(frame, e));
            }
            // The decoder may panic on hostile input in a dependency: contain it as an error.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                obj.decode_pixel_data_frame(frame - 1)
                    .map(|pixels| pixels.data().to_vec())
                    .map_err(|e| e.to_string())
            }))
            .map_err(|_| "the decoder failed on this pixel data".to_string())
            .and_then(|r| r)
            .map_err(|e| RenderError::Undecodable(frame, e))
        })
        .collect()
}

/// Parses `window=center,width[,function]` (PS3.18 §8.3.5.1.3.1).
pub fn parse_window(value: &str) -> Result<WindowLevel, String> {
    let mut parts = value.split(',');
    let center = parts.next().and_then(|c| c.trim().parse::<f64>().ok());
    let width = parts.next().and_then(|w| w.trim().parse::<f64>().ok());
    match (
        center,
        width,
        parts.next().map(|f| f.trim().to_ascii_lowercase()),
    ) {
        (Some(center), Some(width), None | Some(_))
            if width > 0.0 && center.is_finite() && width.is_finite() =>
        {
            Ok(WindowLevel { center, width })
        }
        _ => Err(format!(
            "window must be center,width[,linear|sigmoid] with width > 0, got {value:?}"
        )),
    }
}
