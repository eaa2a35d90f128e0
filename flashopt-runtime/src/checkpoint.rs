//! Checkpoints in safetensors: the compressed state as it lives in memory, an f32
//! export of master weights and decoded states, and an f32 master import.
//!
//! Keys, for a tensor `name` (shape `[len]`, scales `[groups]`, a state per row
//! `[rows]`, per column `[cols]`):
//!
//! Every resident part of the plan is one tensor, `name::<part>`, in the part's
//! storage (its name and dtype come from the plan's part list). For the shipped
//! codecs:
//!
//! | key | dtype | when |
//! | --- | --- | --- |
//! | `name::param` | bf16 / f16 / f32 | always |
//! | `name::correction` | i8 (24-bit master) / i16 (32-bit) | with a master mode |
//! | `name::<state>::codes` | i8 / u8 / bf16 / f32 | every state |
//! | `name::<state>::scales` | f16, one per 32 elements | quantized states |
//! | `name::master`, `name::<state>` | f32 | the f32 export (a state per row or per column: one value each) |
//!
//! The metadata names the format and its version, the kind (`compressed` or `f32`),
//! the optimizer, its storage configuration and states, the steps taken, every
//! parameter group's hyper-parameters and the tensors in order (with their row
//! lengths, which a plan with a matrix function checks). Loading checks all of it,
//! and every tensor's dtype and shape, before anything changes: a truncated, corrupt
//! or mismatched file is an error that names what is wrong. Writes go to a
//! temporary file in the same folder, are synced, then renamed over the target.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flashopt_ir::def::Value;
use flashopt_ir::interp::HostTensor;
use flashopt_ir::layout::Shape;
use flashopt_ir::types::Type;
use flashopt_ir::{Extent, HyperValues, Part, Plan, Storage};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::raw;

pub const FORMAT: &str = "flashopt-checkpoint";
/// Bumped whenever a key, dtype or metadata field changes meaning.
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable safetensors file (truncated or corrupt?): {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: not a flashopt checkpoint (metadata `format` is {found:?})")]
    NotACheckpoint {
        path: PathBuf,
        found: Option<String>,
    },
    #[error("{path}: checkpoint format version {found}; this flashopt reads version {VERSION}")]
    Version { path: PathBuf, found: String },
    #[error("{path}: {field} is `{found}`, this optimizer has `{expected}`")]
    Mismatch {
        path: PathBuf,
        field: String,
        found: String,
        expected: String,
    },
    #[error("{path}: tensor `{key}` is missing")]
    MissingTensor { path: PathBuf, key: String },
    #[error("{path}: tensor `{key}` is not part of this optimizer's state")]
    UnexpectedTensor { path: PathBuf, key: String },
    #[error("{path}: tensor `{key}` is {found}, expected {expected}")]
    TensorShape {
        path: PathBuf,
        key: String,
        found: String,
        expected: String,
    },
    #[error("{dir}: no sharded checkpoint here (no shard-RRRRR-of-WWWWW.safetensors files)")]
    NoShards { dir: PathBuf },
    #[error("{dir}: shards of several world sizes ({worlds:?}); remove the stale ones")]
    WorldSizes { dir: PathBuf, worlds: Vec<usize> },
    #[error("shard of rank {rank} (of {world}): {source}")]
    Shard {
        rank: usize,
        world: usize,
        source: Box<CheckpointError>,
    },
    #[error(
        "shard of rank {rank} (of {world}) is from another save: its {field} is {found}, rank 0's {expected}"
    )]
    ShardsDisagree {
        rank: usize,
        world: usize,
        field: String,
        found: String,
        expected: String,
    },
    #[error("{ranks} other rank(s) failed (their errors say why); nothing changed")]
    PeerFailed { ranks: usize },
    #[error("the ranks could not agree on the checkpoint: {message}")]
    Collective { message: String },
    #[error("{path}: metadata `{key}`: {message}")]
    Metadata {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// One tensor of a checkpoint: its name, parameter group and state.
pub struct Entry<'a> {
    pub name: &'a str,
    pub param_group: usize,
    pub tensor: &'a HostTensor,
}

/// What a loaded checkpoint restores.
#[derive(Debug)]
pub struct Restored {
    pub steps_taken: u64,
    /// One per parameter group.
    pub hyper: Vec<HyperValues>,
    /// In the order of the expected tensors.
    pub tensors: Vec<HostTensor>,
    /// Every metadata field of the file.
    pub metadata: HashMap<String, String>,
}

/// A tensor the loader expects: name, length, parameter group.
pub struct Expected<'a> {
    pub name: &'a str,
    pub len: usize,
    /// Elements per row (the count of a per-row or per-column part depends on it).
    pub row_len: usize,
    pub param_group: usize,
}

/// The key and safetensors dtype of one part of tensor `name`.
fn part_key(name: &str, part: &Part) -> (String, Dtype) {
    let dtype = match part.storage {
        Storage::Bf16 => Dtype::BF16,
        Storage::F16 => Dtype::F16,
        Storage::F32 => Dtype::F32,
        Storage::I8 => Dtype::I8,
        Storage::I16 => Dtype::I16,
        Storage::U8 => Dtype::U8,
    };
    (format!("{name}::{}", part.name), dtype)
}

fn describe_states(plan: &Plan) -> String {
    plan.states
        .iter()
        .map(|s| format!("{}:{}", s.name, s.codec))
        .collect::<Vec<_>>()
        .join(",")
}

/// What every checkpoint file describes besides its tensors.
struct File<'a> {
    plan: &'a Plan,
    hyper: &'a [HyperValues],
    steps_taken: u64,
    entries: &'a [Entry<'a>],
}

impl File<'_> {
    fn header(&self, kind: &str) -> HashMap<String, String> {
        let (plan, hyper, steps) = (self.plan, self.hyper, self.steps_taken);
        let names: Vec<(&str, usize, usize)> = self
            .entries
            .iter()
            .map(|e| (e.name, e.param_group, e.tensor.shape().row_len))
            .collect();
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("version".into(), VERSION.to_string());
        m.insert("kind".into(), kind.into());
        m.insert("optimizer".into(), plan.optimizer.clone());
        m.insert("config".into(), plan.config.to_string());
        m.insert("states".into(), describe_states(plan));
        m.insert("steps_taken".into(), steps.to_string());
        m.insert("param_groups".into(), hyper.len().to_string());
        for (g, values) in hyper.iter().enumerate() {
            for (def, value) in plan.hyper_params.iter().zip(values.values()) {
                m.insert(format!("hyper.{g}.{}", def.name), value.to_string());
            }
        }
        m.insert("tensors".into(), names.len().to_string());
        for (i, (name, group, row_len)) in names.iter().enumerate() {
            m.insert(format!("tensor.{i}"), name.to_string());
            m.insert(format!("tensor.{i}.param_group"), group.to_string());
            m.insert(format!("tensor.{i}.row_len"), row_len.to_string());
        }
        m
    }
}

/// Write `bytes` to `path` so that `path` holds either its old content or all of the
/// new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the folder is synced (not possible everywhere).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn serialize(
    path: &Path,
    tensors: Vec<(String, Dtype, usize, Vec<u8>)>,
    meta: HashMap<String, String>,
) -> Result<u64, CheckpointError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, dtype, len, data)| {
            let view = TensorView::new(*dtype, vec![*len], data).expect("sizes computed here");
            (k.clone(), view)
        })
        .collect();
    let corrupt = |message: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| corrupt(e.to_string()))?;
    let bytes = with_sorted_header(bytes).map_err(corrupt)?;
    write_atomically(path, &bytes).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes.len() as u64)
}

/// `bytes` (a safetensors file) with its JSON header's keys in sorted order, the
/// metadata's included: safetensors writes the metadata map in hash order, so two
/// saves of one state would differ in bytes. The header is padded with spaces to a
/// multiple of 8 bytes, as safetensors pads it; tensor offsets count from its end.
fn with_sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("no header length")?;
    let end = 8 + usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|e| e.to_string())?;
    let header = bytes.get(8..end).ok_or("header past the end")?;
    let mut top: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    if let Some(meta) = top.get_mut("__metadata__") {
        let sorted: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(meta.take()).map_err(|e| e.to_string())?;
        *meta = serde_json::to_value(sorted).map_err(|e| e.to_string())?;
    }
    let mut json = serde_json::to_string(&top).map_err(|e| e.to_string())?;
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - end);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// For `map_err`: a restored state that does not fit the optimizer (the loader's checks
/// make this unreachable for files it read), as a checkpoint error naming the file.
pub(crate) fn unfit(path: &Path) -> impl FnOnce(crate::RuntimeError) -> CheckpointError + '_ {
    move |e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Save the compressed state (exactly the bytes the optimizer holds). Returns the
/// file's size in bytes.
pub fn save(
    path: &Path,
    plan: &Plan,
    hyper: &[HyperValues],
    steps_taken: u64,
    entries: &[Entry<'_>],
) -> Result<u64, CheckpointError> {
    save_with_metadata(path, plan, hyper, steps_taken, entries, Vec::new())
}

/// [`save`] with more metadata fields (a shard's rank and world, say), which
/// [`Restored::metadata`] gives back.
pub fn save_with_metadata(
    path: &Path,
    plan: &Plan,
    hyper: &[HyperValues],
    steps_taken: u64,
    entries: &[Entry<'_>],
    extra: Vec<(String, String)>,
) -> Result<u64, CheckpointError> {
    let mut tensors = Vec::new();
    for e in entries {
        for ((_, part), data) in plan.resident_parts().zip(&e.tensor.parts) {
            let (key, dtype) = part_key(e.name, part);
            tensors.push((key, dtype, data.len(), raw::part_bytes(data)));
        }
    }
    let file = File {
        plan,
        hyper,
        steps_taken,
        entries,
    };
    let mut header = file.header("compressed");
    header.extend(extra);
    serialize(path, tensors, header)
}

/// Save f32 master weights and decoded f32 states: readable by any tool, four bytes
/// per value.
pub fn export_f32(
    path: &Path,
    plan: &Plan,
    hyper: &[HyperValues],
    steps_taken: u64,
    entries: &[Entry<'_>],
) -> Result<u64, CheckpointError> {
    let mut tensors = Vec::new();
    for e in entries {
        let n = e.tensor.len();
        let mut decoded = e.tensor.decoded(plan).into_iter();
        let master = decoded
            .next()
            .expect("the decode program outputs the master first");
        tensors.push((
            format!("{}::master", e.name),
            Dtype::F32,
            n,
            raw::le_bytes(&master),
        ));
        let shape = e.tensor.shape();
        for (s, values) in plan.states.iter().zip(decoded) {
            // The decode program gives every element its row's (column's) value.
            let values: Vec<f32> = match s.extent {
                Extent::Row => values.iter().step_by(shape.row_len).copied().collect(),
                Extent::Column => values[..shape.row_len].to_vec(),
                Extent::Element | Extent::Group => values,
            };
            tensors.push((
                format!("{}::{}", e.name, s.name),
                Dtype::F32,
                values.len(),
                raw::le_bytes(&values),
            ));
        }
    }
    let file = File {
        plan,
        hyper,
        steps_taken,
        entries,
    };
    serialize(path, tensors, file.header("f32"))
}

/// A checkpoint file read and checked against an optimizer.
struct Reader<'a> {
    path: &'a Path,
    tensors: SafeTensors<'a>,
    meta: HashMap<String, String>,
}

impl<'a> Reader<'a> {
    fn open(
        path: &'a Path,
        bytes: &'a [u8],
        plan: &Plan,
        kind: &str,
    ) -> Result<Reader<'a>, CheckpointError> {
        let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        let reader = Reader {
            path,
            tensors,
            meta,
        };
        let format = reader.meta.get("format").cloned();
        if format.as_deref() != Some(FORMAT) {
            return Err(CheckpointError::NotACheckpoint {
                path: path.to_path_buf(),
                found: format,
            });
        }
        let version = reader.field("version")?;
        if version != VERSION.to_string() {
            return Err(CheckpointError::Version {
                path: path.to_path_buf(),
                found: version.to_string(),
            });
        }
        reader.expect("kind", kind)?;
        reader.expect("optimizer", &plan.optimizer)?;
        reader.expect("config", &plan.config.to_string())?;
        reader.expect("states", &describe_states(plan))?;
        Ok(reader)
    }

    fn field(&self, key: &str) -> Result<&str, CheckpointError> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckpointError::Metadata {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                message: "missing".into(),
            })
    }

    fn number(&self, key: &str) -> Result<u64, CheckpointError> {
        let v = self.field(key)?;
        v.parse().map_err(|_| CheckpointError::Metadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: format!("`{v}` is not a count"),
        })
    }

    fn expect(&self, key: &str, expected: &str) -> Result<(), CheckpointError> {
        let found = self.field(key)?;
        if found != expected {
            return Err(CheckpointError::Mismatch {
                path: self.path.to_path_buf(),
                field: key.to_string(),
                found: found.to_string(),
                expected: expected.to_string(),
            });
        }
        Ok(())
    }

    /// The tensor list, in order, must be the optimizer's; where the plan computes with
    /// each tensor's rows and columns (a matrix function), so must each tensor's row
    /// length, if the file records it (files before it was recorded do not).
    fn check_tensors(
        &self,
        expected: &[Expected<'_>],
        shaped: bool,
    ) -> Result<(), CheckpointError> {
        let count = self.number("tensors")? as usize;
        let listed: Vec<&str> = (0..count)
            .map(|i| self.field(&format!("tensor.{i}")))
            .collect::<Result<_, _>>()?;
        let wanted: Vec<&str> = expected.iter().map(|e| e.name).collect();
        if listed != wanted {
            return Err(CheckpointError::Mismatch {
                path: self.path.to_path_buf(),
                field: "tensor list".into(),
                found: listed.join(", "),
                expected: wanted.join(", "),
            });
        }
        for (i, e) in expected.iter().enumerate().filter(|_| shaped) {
            let Ok(row_len) = self.field(&format!("tensor.{i}.row_len")) else {
                continue;
            };
            if row_len != e.row_len.to_string() {
                return Err(CheckpointError::Mismatch {
                    path: self.path.to_path_buf(),
                    field: format!("row length of tensor `{}`", e.name),
                    found: row_len.to_string(),
                    expected: e.row_len.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The data of `key`, checked for dtype and length.
    fn data(&self, key: &str, dtype: Dtype, len: usize) -> Result<&'a [u8], CheckpointError> {
        let view = self
            .tensors
            .tensor(key)
            .map_err(|_| CheckpointError::MissingTensor {
                path: self.path.to_path_buf(),
                key: key.to_string(),
            })?;
        if view.dtype() != dtype || view.shape() != [len] {
            return Err(CheckpointError::TensorShape {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                found: format!("{:?} {:?}", view.dtype(), view.shape()),
                expected: format!("{dtype:?} [{len}]"),
            });
        }
        Ok(view.data())
    }

    /// Every key must be one the optimizer reads.
    fn check_no_extra(&self, read: &[String]) -> Result<(), CheckpointError> {
        let mut names = self.tensors.names();
        names.sort();
        if let Some(extra) = names.into_iter().find(|k| !read.iter().any(|r| r == *k)) {
            return Err(CheckpointError::UnexpectedTensor {
                path: self.path.to_path_buf(),
                key: extra.to_string(),
            });
        }
        Ok(())
    }

    fn hyper(
        &self,
        plan: &Plan,
        current: &[HyperValues],
    ) -> Result<Vec<HyperValues>, CheckpointError> {
        let groups = self.number("param_groups")? as usize;
        if groups != current.len() {
            return Err(CheckpointError::Mismatch {
                path: self.path.to_path_buf(),
                field: "param_groups".into(),
                found: groups.to_string(),
                expected: current.len().to_string(),
            });
        }
        let mut out = Vec::with_capacity(groups);
        for (g, now) in current.iter().enumerate() {
            let mut values = now.clone();
            for def in &plan.hyper_params {
                let key = format!("hyper.{g}.{}", def.name);
                let text = self.field(&key)?;
                let bad = |message: String| CheckpointError::Metadata {
                    path: self.path.to_path_buf(),
                    key: key.clone(),
                    message,
                };
                let value = match def.default.ty() {
                    Type::Bool => text
                        .parse()
                        .map(Value::Bool)
                        .map_err(|_| bad(format!("`{text}` is not a bool"))),
                    Type::Int => text
                        .parse()
                        .map(Value::Int)
                        .map_err(|_| bad(format!("`{text}` is not an int"))),
                    _ => text
                        .parse()
                        .map(Value::Float)
                        .map_err(|_| bad(format!("`{text}` is not a number"))),
                }?;
                values
                    .set(&def.name, value)
                    .map_err(|e| bad(e.to_string()))?;
            }
            out.push(values);
        }
        Ok(out)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read a compressed checkpoint for an optimizer holding `expected` tensors with
/// hyper-parameters `current` (one per parameter group). Nothing is changed here: the
/// caller swaps the result in.
pub fn load(
    path: &Path,
    plan: &Plan,
    current: &[HyperValues],
    expected: &[Expected<'_>],
) -> Result<Restored, CheckpointError> {
    let bytes = read_file(path)?;
    let r = Reader::open(path, &bytes, plan, "compressed")?;
    r.check_tensors(expected, plan.depends_on_shape())?;
    let mut read = Vec::new();
    let mut tensors = Vec::with_capacity(expected.len());
    for e in expected {
        let shape = Shape {
            len: e.len,
            row_len: e.row_len,
        };
        let tensor = raw::assemble(plan, shape, |_, part, count| {
            let (key, dtype) = part_key(e.name, part);
            let data = r.data(&key, dtype, count)?;
            read.push(key);
            Ok(data)
        })?;
        let group_key = format!("tensor.{}.param_group", tensors.len());
        let group = r.number(&group_key)? as usize;
        if group != e.param_group {
            return Err(CheckpointError::Mismatch {
                path: path.to_path_buf(),
                field: format!("parameter group of `{}`", e.name),
                found: group.to_string(),
                expected: e.param_group.to_string(),
            });
        }
        tensors.push(tensor);
    }
    r.check_no_extra(&read)?;
    let hyper = r.hyper(plan, current)?;
    Ok(Restored {
        steps_taken: r.number("steps_taken")?,
        hyper,
        tensors,
        metadata: r.meta.clone(),
    })
}

/// Read f32 master weights (`name::master`, as [`export_f32`] writes them, or any
/// safetensors file with those keys and f32 data) for the `expected` tensors.
pub fn read_master_f32(
    path: &Path,
    expected: &[Expected<'_>],
) -> Result<Vec<Vec<f32>>, CheckpointError> {
    let bytes = read_file(path)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(expected.len());
    for e in expected {
        let key = format!("{}::master", e.name);
        let view = tensors
            .tensor(&key)
            .map_err(|_| CheckpointError::MissingTensor {
                path: path.to_path_buf(),
                key: key.clone(),
            })?;
        if view.dtype() != Dtype::F32 || view.shape().iter().product::<usize>() != e.len {
            return Err(CheckpointError::TensorShape {
                path: path.to_path_buf(),
                key,
                found: format!("{:?} {:?}", view.dtype(), view.shape()),
                expected: format!("F32 with {} elements", e.len),
            });
        }
        out.push(raw::from_le::<f32>(view.data()));
    }
    Ok(out)
}
