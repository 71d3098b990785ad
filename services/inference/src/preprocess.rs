//! From decoded slices to a model's input tensor: resize (separable; area average when
//! shrinking, linear when growing), then window or min-max normalization, then scale and offset,
//! laid out as NCHW or NHWC with the grey value in every channel. Pure functions over `f32`.

use crate::manifest::{Input, Layout, Normalize, Preprocess};

/// One greyscale slice (frame), row-major, in modality units (HU for CT) when rescaled.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// For each output index, the source indices and weights that make it.
fn axis_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let ratio = src as f32 / dst as f32;
    (0..dst)
        .map(|o| {
            if ratio >= 1.0 {
                // Shrinking: the average over the source interval [o*ratio, (o+1)*ratio).
                let (start, end) = (o as f32 * ratio, (o as f32 + 1.0) * ratio);
                let mut taps = Vec::new();
                let mut i = start.floor() as usize;
                while (i as f32) < end && i < src {
                    let lo = start.max(i as f32);
                    let hi = end.min(i as f32 + 1.0);
                    if hi > lo {
                        taps.push((i, hi - lo));
                    }
                    i += 1;
                }
                let total: f32 = taps.iter().map(|t| t.1).sum();
                taps.iter().map(|&(i, w)| (i, w / total)).collect()
            } else {
                // Growing: linear between the two nearest source centres.
                let x = ((o as f32 + 0.5) * ratio - 0.5).clamp(0.0, (src - 1) as f32);
                let i = x.floor() as usize;
                let f = x - i as f32;
                if i + 1 < src && f > 0.0 {
                    vec![(i, 1.0 - f), (i + 1, f)]
                } else {
                    vec![(i, 1.0)]
                }
            }
        })
        .collect()
}

/// Resizes a slice to `width` × `height`.
pub fn resize(slice: &Slice, width: usize, height: usize) -> Slice {
    if slice.width == width && slice.height == height {
        return slice.clone();
    }
    let wx = axis_weights(slice.width, width);
    let wy = axis_weights(slice.height, height);
    // Rows first: height_src × width.
    let mut rows = vec![0f32; slice.height * width];
    for y in 0..slice.height {
        let src = &slice.values[y * slice.width..(y + 1) * slice.width];
        let dst = &mut rows[y * width..(y + 1) * width];
        for (x, taps) in wx.iter().enumerate() {
            dst[x] = taps.iter().map(|&(i, w)| src[i] * w).sum();
        }
    }
    let mut out = vec![0f32; height * width];
    for (y, taps) in wy.iter().enumerate() {
        let dst = &mut out[y * width..(y + 1) * width];
        for &(i, w) in taps {
            let src = &rows[i * width..(i + 1) * width];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s * w;
            }
        }
    }
    Slice {
        width,
        height,
        values: out,
    }
}

/// Window or normalization, then scale and offset, in place.
pub fn map_values(values: &mut [f32], pre: &Preprocess) {
    let (lo, span) = if let Some(w) = pre.window {
        (w.center - w.width / 2.0, w.width)
    } else if pre.normalize == Normalize::Minmax {
        let (min, max) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        (min, if max > min { max - min } else { 0.0 })
    } else {
        (0.0, 1.0)
    };
    let clamp = pre.window.is_some() || pre.normalize == Normalize::Minmax;
    for v in values.iter_mut() {
        let mut x = if span > 0.0 { (*v - lo) / span } else { 0.0 };
        if clamp {
            x = x.clamp(0.0, 1.0);
        }
        *v = x * pre.scale + pre.offset;
    }
}

/// Writes `slice`, resized and mapped, into slot `index` of a batch tensor laid out as `input`
/// says. `batch` holds `input.batch` (or fewer) slots of channels × height × width values.
pub fn write_slot(batch: &mut [f32], index: usize, slice: &Slice, input: &Input, pre: &Preprocess) {
    let mut s = resize(slice, input.width, input.height);
    map_values(&mut s.values, pre);
    let (c, plane) = (input.channels, input.width * input.height);
    let slot = &mut batch[index * c * plane..(index + 1) * c * plane];
    match input.layout {
        Layout::Nchw => {
            for ch in 0..c {
                slot[ch * plane..(ch + 1) * plane].copy_from_slice(&s.values);
            }
        }
        Layout::Nhwc => {
            for (p, v) in s.values.iter().enumerate() {
                slot[p * c..(p + 1) * c].fill(*v);
            }
        }
    }
}

/// The shape of a batch of `n` slices.
pub fn batch_shape(input: &Input, n: usize) -> [usize; 4] {
    match input.layout {
        Layout::Nchw => [n, input.channels, input.height, input.width],
        Layout::Nhwc => [n, input.height, input.width, input.channels],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Window;

    fn input(layout: Layout, channels: usize, side: usize) -> Input {
        Input {
            name: String::new(),
            layout,
            channels,
            height: side,
            width: side,
            batch: 2,
            max_slices: 0,
        }
    }

    #[test]
    fn shrinking_averages_the_area_each_output_pixel_covers() {
        let slice = Slice {
            width: 4,
            height: 2,
            values: vec![0.0, 2.0, 4.0, 6.0, 10.0, 12.0, 14.0, 16.0],
        };
        let out = resize(&slice, 2, 1);
        assert_eq!(out.values, vec![6.0, 10.0]);
        // A constant stays constant through a non-integer ratio.
        let flat = Slice {
            width: 512,
            height: 512,
            values: vec![40.0; 512 * 512],
        };
        let out = resize(&flat, 240, 240);
        let worst = out
            .values
            .iter()
            .map(|v| (v - 40.0).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-3, "off by {worst}");
    }

    #[test]
    fn growing_interpolates_between_neighbours() {
        let slice = Slice {
            width: 2,
            height: 1,
            values: vec![0.0, 10.0],
        };
        let out = resize(&slice, 4, 1);
        assert_eq!(out.values, vec![0.0, 2.5, 7.5, 10.0]);
    }

    #[test]
    fn a_window_maps_to_zero_one_and_clamps() {
        let pre = Preprocess {
            rescale: true,
            window: Some(Window {
                center: 40.0,
                width: 80.0,
            }),
            normalize: Normalize::None,
            scale: 1.0,
            offset: 0.0,
        };
        let mut v = vec![-1000.0, 0.0, 40.0, 80.0, 1000.0];
        map_values(&mut v, &pre);
        assert_eq!(v, vec![0.0, 0.0, 0.5, 1.0, 1.0]);
        let minmax = Preprocess {
            window: None,
            normalize: Normalize::Minmax,
            scale: 2.0,
            offset: -1.0,
            ..pre
        };
        let mut v = vec![10.0, 20.0, 30.0];
        map_values(&mut v, &minmax);
        assert_eq!(v, vec![-1.0, 0.0, 1.0]);
    }

    #[test]
    fn the_grey_value_fills_every_channel_in_either_layout() {
        let slice = Slice {
            width: 2,
            height: 2,
            values: vec![1.0, 2.0, 3.0, 4.0],
        };
        let pre = Preprocess::default();
        let nhwc = input(Layout::Nhwc, 3, 2);
        let mut batch = vec![0.0; 2 * 12];
        write_slot(&mut batch, 1, &slice, &nhwc, &pre);
        assert_eq!(&batch[12..18], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(batch_shape(&nhwc, 2), [2, 2, 2, 3]);
        let nchw = input(Layout::Nchw, 3, 2);
        let mut batch = vec![0.0; 12];
        write_slot(&mut batch, 0, &slice, &nchw, &pre);
        assert_eq!(&batch[4..8], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(batch_shape(&nchw, 1), [1, 3, 2, 2]);
    }
}
