//! From a model's output tensor to findings, as the manifest's `output` says: top class per
//! slice, one score per slice, or a heatmap whose connected hot cells become boxes.

use hub_events::catalog::Finding;

use crate::manifest::Output;

/// Where a slice of the batch came from, and its size in pixels (boxes are given in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRef {
    pub series_uid: String,
    pub sop_instance_uid: String,
    /// 1-based frame of a multi-frame instance; `None` for a single-frame one.
    pub frame: Option<u32>,
    pub width: usize,
    pub height: usize,
}

fn finding(slice: &SliceRef, label: &str, score: f32, bbox: Option<[f32; 4]>) -> Finding {
    Finding {
        series_uid: slice.series_uid.clone(),
        sop_instance_uid: slice.sop_instance_uid.clone(),
        frame: slice.frame,
        label: label.to_owned(),
        score,
        bbox,
    }
}

/// Decodes one batch output. `shape` is the tensor's shape, `data` its values in row-major order;
/// `slices` names the batch's slices in order. A shape that does not fit the manifest or a
/// non-finite value is an error that says so.
pub fn decode(
    output: &Output,
    shape: &[i64],
    data: &[f32],
    slices: &[SliceRef],
) -> Result<Vec<Finding>, String> {
    let n = slices.len();
    if shape.first().copied() != Some(n as i64) {
        return Err(format!(
            "the model's output has shape {shape:?}; expected {n} slices first"
        ));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err("the model's output holds a non-finite value (NaN or infinity)".into());
    }
    let per_slice = data.len() / n.max(1);
    if per_slice * n != data.len() || per_slice == 0 {
        return Err(format!(
            "the model's output has {} values for {n} slices",
            data.len()
        ));
    }
    let mut out = Vec::new();
    for (slice, values) in slices.iter().zip(data.chunks(per_slice)) {
        match output {
            Output::Classes {
                labels,
                threshold,
                ignore_labels,
                softmax,
                ..
            } => {
                if values.len() != labels.len() {
                    return Err(format!(
                        "the model's output has {} classes per slice; the manifest lists {} labels",
                        values.len(),
                        labels.len()
                    ));
                }
                let probs = if *softmax {
                    softmax_of(values)
                } else {
                    values.to_vec()
                };
                let (best, score) =
                    probs
                        .iter()
                        .copied()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |a, (i, p)| if p > a.1 { (i, p) } else { a },
                        );
                let label = &labels[best];
                if score >= *threshold && !ignore_labels.contains(label) {
                    out.push(finding(slice, label, score, None));
                }
            }
            Output::SliceScores {
                label, threshold, ..
            } => {
                if values.len() != 1 {
                    return Err(format!(
                        "the model's output has {} values per slice; a slice score is one",
                        values.len()
                    ));
                }
                if values[0] >= *threshold {
                    out.push(finding(slice, label, values[0], None));
                }
            }
            Output::Heatmap {
                label, threshold, ..
            } => {
                let (rows, cols) = match shape {
                    [_, 1, r, c] | [_, r, c] if *r > 0 && *c > 0 => (*r as usize, *c as usize),
                    _ => {
                        return Err(format!(
                            "the model's output has shape {shape:?}; a heatmap is [n, 1, rows, cols]"
                        ));
                    }
                };
                for (score, [r0, c0, r1, c1]) in hot_regions(values, rows, cols, *threshold) {
                    let (cw, ch) = (
                        slice.width as f32 / cols as f32,
                        slice.height as f32 / rows as f32,
                    );
                    let bbox = [
                        c0 as f32 * cw,
                        r0 as f32 * ch,
                        (c1 - c0 + 1) as f32 * cw,
                        (r1 - r0 + 1) as f32 * ch,
                    ];
                    out.push(finding(slice, label, score, Some(bbox)));
                }
            }
        }
    }
    Ok(out)
}

fn softmax_of(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = values.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The 4-connected groups of cells at or above `threshold`: (highest score, [row0, col0, row1,
/// col1] inclusive), in the order their first cell appears.
fn hot_regions(cells: &[f32], rows: usize, cols: usize, threshold: f32) -> Vec<(f32, [usize; 4])> {
    let mut seen = vec![false; rows * cols];
    let mut regions = Vec::new();
    for start in 0..rows * cols {
        if seen[start] || cells[start] < threshold {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let (mut best, mut bounds) = (f32::NEG_INFINITY, [rows, cols, 0, 0]);
        while let Some(i) = stack.pop() {
            let (r, c) = (i / cols, i % cols);
            best = best.max(cells[i]);
            bounds = [
                bounds[0].min(r),
                bounds[1].min(c),
                bounds[2].max(r),
                bounds[3].max(c),
            ];
            let mut visit = |j: usize| {
                if !seen[j] && cells[j] >= threshold {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if r > 0 {
                visit(i - cols);
            }
            if r + 1 < rows {
                visit(i + cols);
            }
            if c > 0 {
                visit(i - 1);
            }
            if c + 1 < cols {
                visit(i + 1);
            }
        }
        regions.push((best, bounds));
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(sop: &str) -> SliceRef {
        SliceRef {
            series_uid: "1.2.1".into(),
            sop_instance_uid: sop.into(),
            frame: None,
            width: 512,
            height: 512,
        }
    }

    #[test]
    fn the_top_class_is_a_finding_unless_ignored_or_below_threshold() {
        let output = Output::Classes {
            name: String::new(),
            labels: vec!["glioma".into(), "notumor".into()],
            threshold: 0.6,
            ignore_labels: vec!["notumor".into()],
            softmax: false,
        };
        let data = [0.9, 0.1, 0.2, 0.8, 0.55, 0.45];
        let found = decode(
            &output,
            &[3, 2],
            &data,
            &[slice("a"), slice("b"), slice("c")],
        )
        .expect("decodes");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].sop_instance_uid.as_str(), found[0].label.as_str()),
            ("a", "glioma")
        );
        assert!((found[0].score - 0.9).abs() < 1e-6);
    }

    #[test]
    fn each_connected_hot_area_of_a_heatmap_is_one_box_in_slice_pixels() {
        let output = Output::Heatmap {
            name: String::new(),
            label: "hyperdense region".into(),
            threshold: 0.5,
        };
        // 4 × 4 cells over a 512 × 512 slice: one area of two cells, one lone cell.
        #[rustfmt::skip]
        let cells = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.6, 0.9, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.7, 0.0, 0.0, 0.0,
        ];
        let found = decode(&output, &[1, 1, 4, 4], &cells, &[slice("a")]).expect("decodes");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].bbox, Some([128.0, 128.0, 256.0, 128.0]));
        assert!((found[0].score - 0.9).abs() < 1e-6);
        assert_eq!(found[1].bbox, Some([0.0, 384.0, 128.0, 128.0]));
    }

    #[test]
    fn an_output_that_does_not_fit_the_manifest_is_an_error_not_a_panic() {
        let output = Output::Classes {
            name: String::new(),
            labels: vec!["a".into(), "b".into(), "c".into()],
            threshold: 0.5,
            ignore_labels: vec![],
            softmax: true,
        };
        let e = decode(&output, &[1, 2], &[0.1, 0.9], &[slice("a")]).expect_err("refused");
        assert!(e.contains("2 classes per slice"), "{e}");
        let e = decode(&output, &[2, 3], &[0.1; 6], &[slice("a")]).expect_err("refused");
        assert!(e.contains("expected 1 slices"), "{e}");
        let e =
            decode(&output, &[1, 3], &[0.1, f32::NAN, 0.2], &[slice("a")]).expect_err("refused");
        assert!(e.contains("non-finite"), "{e}");
    }
}
