//! Sharded checkpoints: each rank writes its pieces to its own file, and any world
//! size reads them back.
//!
//! A checkpoint is a folder of files `shard-RRRRR-of-WWWWW.safetensors`, one per rank,
//! each a flashopt checkpoint ([`crate::checkpoint`]) whose tensors are the rank's
//! pieces, named `tensor@first_element` (every resident part, the parameter included,
//! so the files together hold every value once), with the fields `shard.rank`,
//! `shard.world` and `shard.save` (an id every rank of one save shares) in its
//! metadata. The pieces follow from the tensor list and the world size alone
//! ([`super::ShardLayout`]), so a reader with any world size knows what each file must
//! hold and checks it.
//!
//! Saving is two-phase: each rank writes its file under a staging name, the ranks
//! agree that every write succeeded, then each renames its file into place; on any
//! failure every staged file is removed and the previous checkpoint stays as it was.
//! Loading reads every file of the saved world, assembles the whole tensors, and cuts
//! this rank's pieces for the current world; the ranks agree that every load
//! succeeded before any changes anything.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use flashopt_ir::interp::HostTensor;
use flashopt_ir::{HyperValues, Plan};

use super::layout::{Piece, assemble};
use crate::checkpoint::{self, CheckpointError, Entry, Expected, Restored};
use crate::core::TensorInfo;

/// What saving and loading need of a rank, CPU or GPU: the whole tensors, this
/// rank's pieces and their state, and a way to agree with the other ranks.
pub trait CheckpointedRank {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    fn plan(&self) -> &Plan;
    /// One set of values per parameter group.
    fn hyper(&self) -> &[HyperValues];
    fn steps_taken(&self) -> u64;
    /// The whole tensors, in order.
    fn tensors(&self) -> &[TensorInfo];
    fn pieces(&self) -> &[Piece];
    /// One per piece: its parameter and states, read where they live.
    fn shard_state(&self) -> Cow<'_, [HostTensor]>;
    /// The element-wise sum over ranks, in place.
    fn all_reduce(&self, values: &mut [f64]) -> Result<(), CheckpointError>;
    /// Take the whole tensors' state (this rank keeps every parameter and its
    /// pieces' states), the step counter and the hyper-parameters of a checkpoint.
    fn restore(&mut self, whole: Vec<HostTensor>, steps_taken: u64, hyper: Vec<HyperValues>);
}

/// The file of rank `rank` in a world of `world` ranks.
pub fn shard_file(dir: &Path, rank: usize, world: usize) -> PathBuf {
    dir.join(format!("shard-{rank:05}-of-{world:05}.safetensors"))
}

/// The world sizes of the shard files in `dir`. A file named like a shard whose
/// rank or world cannot be (a world of 0 ranks, a rank past its world) is an error
/// naming it.
fn saved_worlds(dir: &Path) -> Result<Vec<usize>, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut worlds = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix("shard-")
            .and_then(|r| r.strip_suffix(".safetensors"))
        else {
            continue;
        };
        let Some((rank, world)) = rest.split_once("-of-") else {
            continue;
        };
        let (Ok(rank), Ok(world)) = (rank.parse::<usize>(), world.parse::<usize>()) else {
            continue;
        };
        if rank >= world {
            return Err(CheckpointError::Corrupt {
                path: entry.path(),
                message: format!(
                    "a shard of rank {rank} in a world of {world} rank(s) cannot exist; remove the file"
                ),
            });
        }
        worlds.push(world);
    }
    worlds.sort_unstable();
    worlds.dedup();
    Ok(worlds)
}

/// Save `r`'s pieces into the folder `dir` (see the module's documentation).
pub fn save(r: &impl CheckpointedRank, dir: &Path) -> Result<u64, CheckpointError> {
    let (rank, world) = (r.rank(), r.world());
    // One id for the save, rank 0's.
    let mut id = [0.0f64];
    if rank == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        id[0] = (nanos % (1u128 << 52)) as f64;
    }
    r.all_reduce(&mut id)?;
    let target = shard_file(dir, rank, world);
    let staged = dir.join(format!(".shard-{rank:05}-of-{world:05}.staged"));
    let written = std::fs::create_dir_all(dir)
        .map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })
        .and_then(|()| write_pieces(r, &staged, id[0] as u64));
    let failed = agree(r, written.is_err());
    let written = written.map_err(|e| in_shard(r, e))?;
    let failed = failed?;
    if failed > 0 {
        let _ = std::fs::remove_file(&staged);
        return Err(CheckpointError::PeerFailed { ranks: failed });
    }
    let renamed = std::fs::rename(&staged, &target).map_err(|source| CheckpointError::Io {
        path: target.clone(),
        source,
    });
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    // Every rank's file is in place before rank 0 tidies up. A rank whose rename
    // failed leaves a mixed folder, which loading refuses (`shard.save` differs).
    let failed = agree(r, renamed.is_err());
    renamed.map_err(|e| in_shard(r, e))?;
    let failed = failed?;
    if failed > 0 {
        return Err(CheckpointError::PeerFailed { ranks: failed });
    }
    if rank == 0 {
        for old in saved_worlds(dir)?.into_iter().filter(|&w| w != world) {
            for r in 0..old {
                let _ = std::fs::remove_file(shard_file(dir, r, old));
            }
        }
    }
    Ok(written)
}

fn write_pieces(r: &impl CheckpointedRank, path: &Path, id: u64) -> Result<u64, CheckpointError> {
    let tensors = r.tensors();
    let names: Vec<String> = r
        .pieces()
        .iter()
        .map(|p| p.name(&tensors[p.tensor].name))
        .collect();
    let state = r.shard_state();
    let entries: Vec<Entry<'_>> = r
        .pieces()
        .iter()
        .zip(state.iter())
        .zip(&names)
        .map(|((p, tensor), name)| Entry {
            name,
            param_group: tensors[p.tensor].param_group,
            tensor,
        })
        .collect();
    let extra = vec![
        ("shard.rank".into(), r.rank().to_string()),
        ("shard.world".into(), r.world().to_string()),
        ("shard.save".into(), id.to_string()),
    ];
    checkpoint::save_with_metadata(path, r.plan(), r.hyper(), r.steps_taken(), &entries, extra)
}

/// Restore a checkpoint saved by any number of ranks into `r` (see the module's
/// documentation).
pub fn load(r: &mut impl CheckpointedRank, dir: &Path) -> Result<(), CheckpointError> {
    let read = read_checkpoint(&*r, dir);
    let failed = agree(&*r, read.is_err());
    let (restored, whole) = read?;
    let failed = failed?;
    if failed > 0 {
        return Err(CheckpointError::PeerFailed { ranks: failed });
    }
    r.restore(whole, restored.steps_taken, restored.hyper);
    Ok(())
}

/// Every shard file of the saved world, checked, and the whole tensors they hold.
fn read_checkpoint(
    r: &impl CheckpointedRank,
    dir: &Path,
) -> Result<(Restored, Vec<HostTensor>), CheckpointError> {
    let world = match saved_worlds(dir)?.as_slice() {
        [] => {
            return Err(CheckpointError::NoShards {
                dir: dir.to_path_buf(),
            });
        }
        [w] => *w,
        worlds => {
            return Err(CheckpointError::WorldSizes {
                dir: dir.to_path_buf(),
                worlds: worlds.to_vec(),
            });
        }
    };
    let tensors = r.tensors();
    let whole = r.plan().matrix_functions().is_some();
    let (segs, saved) = super::layout::place(tensors, world, whole);
    let mut first: Option<Restored> = None;
    let mut pieces = Vec::new();
    for rank in 0..world {
        let in_rank = |source| CheckpointError::Shard {
            rank,
            world,
            source: Box::new(source),
        };
        let layout_pieces = saved.pieces(rank, &segs);
        let names: Vec<String> = layout_pieces
            .iter()
            .map(|p| p.name(&tensors[p.tensor].name))
            .collect();
        let expected: Vec<Expected<'_>> = layout_pieces
            .iter()
            .zip(&names)
            .map(|(p, name)| Expected {
                name,
                len: p.elements.len(),
                row_len: p.shape.row_len,
                param_group: tensors[p.tensor].param_group,
            })
            .collect();
        let path = shard_file(dir, rank, world);
        let restored = checkpoint::load(&path, r.plan(), r.hyper(), &expected).map_err(in_rank)?;
        let field = |r: &Restored, key: &str| r.metadata.get(key).cloned().unwrap_or_default();
        if field(&restored, "shard.rank") != rank.to_string() {
            return Err(in_rank(CheckpointError::Mismatch {
                path,
                field: "shard.rank".into(),
                found: field(&restored, "shard.rank"),
                expected: rank.to_string(),
            }));
        }
        if let Some(first) = &first {
            for key in ["shard.save", "steps_taken"] {
                let (found, expected) = (field(&restored, key), field(first, key));
                if found != expected {
                    return Err(CheckpointError::ShardsDisagree {
                        rank,
                        world,
                        field: key.into(),
                        found,
                        expected,
                    });
                }
            }
        }
        let Restored {
            tensors: piece_state,
            steps_taken,
            hyper,
            metadata,
        } = restored;
        pieces.extend(layout_pieces.into_iter().zip(piece_state));
        first.get_or_insert(Restored {
            tensors: Vec::new(),
            steps_taken,
            hyper,
            metadata,
        });
    }
    let whole = assemble(r.plan(), tensors, pieces.iter().map(|(p, t)| (p, t)));
    Ok((first.expect("a world has a rank"), whole))
}

/// Tell every rank whether this one failed; returns how many others did.
fn agree(r: &impl CheckpointedRank, failed: bool) -> Result<usize, CheckpointError> {
    let mut count = [f64::from(u8::from(failed))];
    r.all_reduce(&mut count)?;
    Ok(count[0] as usize - usize::from(failed))
}

fn in_shard(r: &impl CheckpointedRank, source: CheckpointError) -> CheckpointError {
    CheckpointError::Shard {
        rank: r.rank(),
        world: r.world(),
        source: Box::new(source),
    }
}
