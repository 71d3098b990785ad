//! The model registry: a folder of TOML manifests, one per model version. A manifest names the
//! ONNX file, which series it applies to (modality, body part), how pixels become its input
//! tensor, and how its output becomes findings. Adding a model is adding a manifest.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One model version, as its manifest describes it, with its file resolved and hashed.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub manifest: Manifest,
    /// The ONNX file, resolved against the manifest's folder.
    pub path: PathBuf,
    /// SHA-256 of the ONNX file, lowercase hex.
    pub sha256: String,
}

impl Model {
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Stable identifier, recorded on every finding (`ct-hyperdense-reference`).
    pub id: String,
    pub version: String,
    /// The ONNX file, relative to the manifest.
    pub file: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "match")]
    pub filter: Filter,
    pub input: Input,
    #[serde(default)]
    pub preprocess: Preprocess,
    pub output: Output,
}

/// Which series a model runs on.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// DICOM Modality values (`CT`, `MR`); a series matches one of them.
    pub modalities: Vec<String>,
    /// DICOM Body Part Examined values (`HEAD`, `BRAIN`); empty: any body part.
    #[serde(default)]
    pub body_parts: Vec<String>,
    /// Whether a series without Body Part Examined matches a non-empty `body_parts`.
    #[serde(default)]
    pub body_part_missing_matches: bool,
}

impl Filter {
    pub fn modality_matches(&self, modality: Option<&str>) -> bool {
        modality.is_some_and(|m| {
            self.modalities
                .iter()
                .any(|want| want.eq_ignore_ascii_case(m.trim()))
        })
    }

    pub fn body_part_matches(&self, body_part: Option<&str>) -> bool {
        if self.body_parts.is_empty() {
            return true;
        }
        match body_part.map(str::trim).filter(|b| !b.is_empty()) {
            None => self.body_part_missing_matches,
            Some(b) => self
                .body_parts
                .iter()
                .any(|want| want.eq_ignore_ascii_case(b)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// [batch, channels, height, width]
    Nchw,
    /// [batch, height, width, channels]
    Nhwc,
}

/// The model's input tensor.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Input name; empty: the model's first input.
    #[serde(default)]
    pub name: String,
    pub layout: Layout,
    /// 1 (grey) or 3 (the grey value repeated, as RGB-trained networks expect).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Slices per run.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// At most this many slices per series, evenly spaced; 0: every slice.
    #[serde(default)]
    pub max_slices: usize,
}

fn default_batch() -> usize {
    16
}

/// How stored values become model input, in this order: modality LUT, window or normalization,
/// scale and offset, resize (area average when shrinking, bilinear when growing).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Apply Rescale Slope/Intercept (CT: values become Hounsfield units).
    #[serde(default = "yes")]
    pub rescale: bool,
    /// Window center/width: values map linearly from [c - w/2, c + w/2] to [0, 1], clamped.
    pub window: Option<Window>,
    /// `minmax`: each slice maps linearly from its own [min, max] to [0, 1].
    #[serde(default)]
    pub normalize: Normalize,
    /// Applied after window/normalization: `x * scale + offset`.
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default)]
    pub offset: f32,
}

impl Default for Preprocess {
    fn default() -> Preprocess {
        Preprocess {
            rescale: true,
            window: None,
            normalize: Normalize::None,
            scale: 1.0,
            offset: 0.0,
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> f32 {
    1.0
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub center: f32,
    pub width: f32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    #[default]
    None,
    Minmax,
}

/// How the first (or named) output becomes findings.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// [batch, classes] probabilities: per slice, the top class is a finding when its score
    /// reaches `threshold` and it is not one of `ignore_labels`.
    Classes {
        #[serde(default)]
        name: String,
        labels: Vec<String>,
        threshold: f32,
        #[serde(default)]
        ignore_labels: Vec<String>,
        /// Apply softmax first (the output is logits).
        #[serde(default)]
        softmax: bool,
    },
    /// [batch, 1] or [batch]: one score per slice; a finding when it reaches `threshold`.
    SliceScores {
        #[serde(default)]
        name: String,
        label: String,
        threshold: f32,
    },
    /// [batch, 1, rows, cols] cell scores over the slice: each 4-connected group of cells at or
    /// above `threshold` is one finding, boxed in the slice's pixel coordinates.
    Heatmap {
        #[serde(default)]
        name: String,
        label: String,
        threshold: f32,
    },
}

impl Output {
    pub fn name(&self) -> &str {
        match self {
            Output::Classes { name, .. }
            | Output::SliceScores { name, .. }
            | Output::Heatmap { name, .. } => name,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read model manifest {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("model manifest {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "model manifest {path}: its ONNX file {file} cannot be read ({reason}); see the \
         manifest's description for how to make or install it"
    )]
    MissingFile {
        path: PathBuf,
        file: PathBuf,
        reason: String,
    },
    #[error("models {first} and {second} both declare model {id} version {version}")]
    Duplicate {
        id: String,
        version: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl Manifest {
    /// Parses and validates a manifest's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let m: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(&m.id) {
            return Err(invalid(format!(
                "`id` must be letters, digits, `-`, `_` or `.`; got {:?}",
                m.id
            )));
        }
        if !name_ok(&m.version) {
            return Err(invalid(format!(
                "`version` must be letters, digits, `-`, `_` or `.`; got {:?}",
                m.version
            )));
        }
        if m.file.trim().is_empty() {
            return Err(invalid("`file` must name the ONNX file".into()));
        }
        if m.filter.modalities.is_empty() {
            return Err(invalid(
                "`match.modalities` must name at least one modality".into(),
            ));
        }
        let i = &m.input;
        if !matches!(i.channels, 1 | 3) {
            return Err(invalid(format!(
                "`input.channels` must be 1 or 3; got {}",
                i.channels
            )));
        }
        for (key, v) in [
            ("input.height", i.height),
            ("input.width", i.width),
            ("input.batch", i.batch),
        ] {
            if !(1..=4096).contains(&v) {
                return Err(invalid(format!("`{key}` must be 1 to 4096; got {v}")));
            }
        }
        if let Some(w) = m.preprocess.window
            && !(w.width > 0.0 && w.width.is_finite() && w.center.is_finite())
        {
            return Err(invalid(format!(
                "`preprocess.window` needs a finite center and a width above 0; got {w:?}"
            )));
        }
        if m.preprocess.window.is_some() && m.preprocess.normalize != Normalize::None {
            return Err(invalid(
                "set `preprocess.window` or `preprocess.normalize`, not both".into(),
            ));
        }
        let threshold = match &m.output {
            Output::Classes {
                labels,
                threshold,
                ignore_labels,
                ..
            } => {
                if labels.is_empty() {
                    return Err(invalid("`output.labels` must list the classes".into()));
                }
                if let Some(l) = ignore_labels.iter().find(|l| !labels.contains(l)) {
                    return Err(invalid(format!(
                        "`output.ignore_labels` names {l:?}, which is not in `output.labels`"
                    )));
                }
                *threshold
            }
            Output::SliceScores {
                label, threshold, ..
            }
            | Output::Heatmap {
                label, threshold, ..
            } => {
                if label.trim().is_empty() {
                    return Err(invalid("`output.label` must name what is found".into()));
                }
                *threshold
            }
        };
        if !threshold.is_finite() {
            return Err(invalid(format!(
                "`output.threshold` must be a number; got {threshold}"
            )));
        }
        Ok(m)
    }
}

/// The models of a registry folder.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    models: Vec<Model>,
}

/// What loading a registry folder gave: the models, and the manifests skipped with the reason.
pub struct Loaded {
    pub registry: Registry,
    pub skipped: Vec<ManifestError>,
}

impl Registry {
    pub fn new(models: Vec<Model>) -> Registry {
        Registry { models }
    }

    /// Reads every `*.toml` in `dir` (sorted by name). A manifest that is invalid or whose ONNX
    /// file is missing is skipped with its error, so one bad model does not stop the others; two
    /// manifests for the same id and version are an error.
    pub fn load(dir: &Path) -> Result<Loaded, ManifestError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ManifestError::Read {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut models: Vec<Model> = Vec::new();
        let mut skipped = Vec::new();
        for path in paths {
            match load_one(&path) {
                Ok(model) => {
                    if let Some(first) = models
                        .iter()
                        .find(|m| m.id() == model.id() && m.version() == model.version())
                    {
                        return Err(ManifestError::Duplicate {
                            id: model.id().to_owned(),
                            version: model.version().to_owned(),
                            first: first.path.clone(),
                            second: model.path.clone(),
                        });
                    }
                    models.push(model);
                }
                Err(e) => skipped.push(e),
            }
        }
        Ok(Loaded {
            registry: Registry { models },
            skipped,
        })
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The model `id`, at `version` or else its last version in manifest order.
    pub fn find(&self, id: &str, version: Option<&str>) -> Option<&Model> {
        self.models
            .iter()
            .rev()
            .find(|m| m.id() == id && version.is_none_or(|v| m.version() == v))
    }

    /// Only the models whose modality filter accepts one of `modalities`.
    pub fn for_modalities(&self, modalities: &[String]) -> Vec<&Model> {
        self.models
            .iter()
            .filter(|m| {
                modalities
                    .iter()
                    .any(|x| m.manifest.filter.modality_matches(Some(x)))
            })
            .collect()
    }
}

fn load_one(path: &Path) -> Result<Model, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let manifest = Manifest::parse(&text, path)?;
    let file = path.parent().unwrap_or(Path::new(".")).join(&manifest.file);
    let bytes = std::fs::read(&file).map_err(|e| ManifestError::MissingFile {
        path: path.to_owned(),
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok(Model {
        manifest,
        path: file,
        sha256,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = r#"
id = "ct-test"
version = "1"
file = "ct.onnx"
[match]
modalities = ["CT"]
body_parts = ["HEAD"]
[input]
layout = "nchw"
channels = 1
height = 64
width = 64
[output]
kind = "heatmap"
label = "hyperdense region"
threshold = 0.25
"#;

    #[test]
    fn a_manifest_is_read_with_its_defaults() {
        let m = Manifest::parse(CT, Path::new("ct.toml")).expect("valid");
        assert_eq!(m.input.batch, 16);
        assert!(m.preprocess.rescale);
        assert_eq!(m.preprocess.scale, 1.0);
        assert!(m.filter.modality_matches(Some("ct")));
        assert!(!m.filter.modality_matches(Some("MR")));
        assert!(m.filter.body_part_matches(Some("HEAD")));
        assert!(!m.filter.body_part_matches(Some("CHEST")));
        assert!(!m.filter.body_part_matches(None));
    }

    #[test]
    fn a_bad_manifest_is_refused_naming_the_key_and_value() {
        let e = Manifest::parse(
            &CT.replace("channels = 1", "channels = 2"),
            Path::new("x.toml"),
        )
        .expect_err("refused");
        assert!(
            e.to_string()
                .contains("`input.channels` must be 1 or 3; got 2"),
            "{e}"
        );
        let e = Manifest::parse(
            &CT.replace("kind = \"heatmap\"", "kind = \"masks\""),
            Path::new("x.toml"),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("x.toml"), "{e}");
        let e = Manifest::parse(
            &CT.replace("id = \"ct-test\"", "id = \"a b\""),
            Path::new("x.toml"),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("\"a b\""), "{e}");
    }

    #[test]
    fn a_registry_folder_hashes_each_model_and_skips_a_manifest_without_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ct.toml"), CT).expect("write");
        std::fs::write(dir.path().join("ct.onnx"), b"not really onnx").expect("write");
        std::fs::write(
            dir.path().join("other.toml"),
            CT.replace("ct-test", "other")
                .replace("ct.onnx", "missing.onnx"),
        )
        .expect("write");
        let loaded = Registry::load(dir.path()).expect("loads");
        assert_eq!(loaded.registry.models().len(), 1);
        let model = &loaded.registry.models()[0];
        assert_eq!(
            model.sha256,
            hex(&Sha256::digest(b"not really onnx")),
            "the recorded hash is the file's"
        );
        assert_eq!(loaded.skipped.len(), 1);
        assert!(loaded.skipped[0].to_string().contains("missing.onnx"));
        assert!(loaded.registry.find("ct-test", Some("1")).is_some());
        assert!(loaded.registry.find("ct-test", Some("2")).is_none());
    }
}
