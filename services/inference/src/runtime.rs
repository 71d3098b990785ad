//! ONNX Runtime through `ort` with `load-dynamic`: the library is opened at run time from a path
//! (the `libonnxruntime.so.*` of PyPI's `onnxruntime` wheel works), so the hub builds and starts
//! without it and inference is simply off.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::manifest::Model;
use crate::preprocess::batch_shape;

/// The process's ONNX Runtime: one library, one environment, for the life of the process.
static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Where the `onnxruntime` package of a Python interpreter keeps its shared library
/// (`site-packages/onnxruntime/capi/libonnxruntime.so.*`), for tests and tools that install
/// ONNX Runtime from PyPI; `None` when that interpreter has no onnxruntime.
pub fn library_of_python(python: &str) -> Option<PathBuf> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import glob, os, onnxruntime; \
             print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), \
             'capi', 'libonnxruntime.so.*')))[-1])",
        ])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Proof that ONNX Runtime is loaded; sessions are opened through it.
#[derive(Clone, Debug)]
pub struct Runtime {
    library: PathBuf,
}

impl Runtime {
    /// Loads ONNX Runtime from `library` (once per process; later calls must name the same
    /// file). The error says what failed and how to fix it.
    pub fn load(library: &Path) -> Result<Runtime, String> {
        let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = RUNTIME.get_or_init(|| {
            if !library.is_file() {
                return Err(format!(
                    "ONNX Runtime library {} does not exist (pip install onnxruntime; the file is \
                     onnxruntime/capi/libonnxruntime.so.* in its site-packages)",
                    library.display()
                ));
            }
            let builder = ort::init_from(library)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?;
            let env = builder
                .with_name("hub-inference")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
            Ok((library.to_owned(), env))
        });
        match loaded {
            Ok((path, _)) if path == library => Ok(Runtime {
                library: path.clone(),
            }),
            Ok((path, _)) => Err(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot switch to {}",
                path.display(),
                library.display()
            )),
            Err(e) => Err(e.clone()),
        }
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Opens a session for `model` with `threads` intra-op threads.
    pub fn session(&self, model: &Model, threads: usize) -> Result<ModelSession, String> {
        let fail = |e: ort::Error| {
            format!(
                "model {} {}: cannot open {}: {e}",
                model.id(),
                model.version(),
                model.path.display()
            )
        };
        let env = match RUNTIME.get() {
            Some(Ok((_, env))) => env,
            _ => return Err("ONNX Runtime is not loaded".into()),
        };
        let session = Session::builder(env)
            .map_err(fail)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail(e.into()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| fail(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.into()))?
            .commit_from_file(&model.path)
            .map_err(fail)?;
        let pick = |wanted: &str, names: Vec<String>, what: &str| -> Result<String, String> {
            if wanted.is_empty() {
                names
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("model {} has no {what}", model.id()))
            } else if names.iter().any(|n| n == wanted) {
                Ok(wanted.to_owned())
            } else {
                Err(format!(
                    "model {}: the manifest names {what} {wanted:?}; the ONNX file has {names:?}",
                    model.id()
                ))
            }
        };
        let input = pick(
            &model.manifest.input.name,
            session
                .inputs()
                .iter()
                .map(|i| i.name().to_owned())
                .collect(),
            "input",
        )?;
        let output = pick(
            model.manifest.output.name(),
            session
                .outputs()
                .iter()
                .map(|o| o.name().to_owned())
                .collect(),
            "output",
        )?;
        Ok(ModelSession {
            session,
            input,
            output,
            model: model.clone(),
        })
    }
}

/// One opened model: not shared between threads (each worker opens its own).
pub struct ModelSession {
    session: Session,
    input: String,
    output: String,
    pub model: Model,
}

impl ModelSession {
    /// Runs a batch of `n` slices laid out as the manifest says; returns the output's shape and
    /// values.
    pub fn run(&mut self, n: usize, batch: Vec<f32>) -> Result<(Vec<i64>, Vec<f32>), String> {
        let shape = batch_shape(&self.model.manifest.input, n);
        let tensor = Tensor::from_array((shape, batch))
            .map_err(|e| format!("cannot build the input tensor {shape:?}: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| format!("ONNX Runtime failed on a batch of {n}: {e}"))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| format!("the model gave no output {:?}", self.output))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output {:?} is not a float tensor: {e}", self.output))?;
        Ok((shape.iter().copied().collect(), data.to_vec()))
    }
}
