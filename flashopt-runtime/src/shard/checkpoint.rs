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

use std::path::{Path, PathBuf};

use flashopt_ir::interp::HostTensor;

use super::collective::Collective;
use super::cpu::{ShardedCpuOptimizer, assemble};
use super::layout::{self, ShardLayout};
use crate::checkpoint::{self, CheckpointError, Entry, Expected, Restored};
use crate::segments::segments;

/// The file of rank `rank` in a world of `world` ranks.
pub fn shard_file(dir: &Path, rank: usize, world: usize) -> PathBuf {
    dir.join(format!("shard-{rank:05}-of-{world:05}.safetensors"))
}

fn piece_name(tensor: &str, first_element: usize) -> String {
    format!("{tensor}@{first_element}")
}

/// The world sizes of the shard files in `dir`.
fn saved_worlds(dir: &Path) -> Result<Vec<usize>, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut worlds: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("shard-")?.strip_suffix(".safetensors")?;
            let (_, world) = rest.split_once("-of-")?;
            world.parse().ok()
        })
        .collect();
    worlds.sort_unstable();
    worlds.dedup();
    Ok(worlds)
}

impl<C: Collective> ShardedCpuOptimizer<C> {
    /// Save this rank's pieces into the folder `dir` (created if missing); every rank
    /// calls it with the same folder (a file system all ranks share). Returns this
    /// rank's file size. Shard files of other world sizes left in the folder by older
    /// saves are removed once this save is in place.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        let dir = dir.as_ref();
        let (rank, world) = (self.collective.rank(), self.collective.world());
        // One id for the save, rank 0's.
        let mut id = [0.0f64];
        if rank == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            id[0] = (nanos % (1u128 << 52)) as f64;
        }
        self.collective.all_reduce_f64(&mut id);
        let target = shard_file(dir, rank, world);
        let staged = dir.join(format!(".shard-{rank:05}-of-{world:05}.staged"));
        let written = std::fs::create_dir_all(dir)
            .map_err(|source| CheckpointError::Io {
                path: dir.to_path_buf(),
                source,
            })
            .and_then(|()| self.write_pieces(&staged, id[0] as u64));
        let failed = self.agree(written.is_err());
        let written = written.map_err(|e| self.in_shard(e))?;
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
        let failed = self.agree(renamed.is_err());
        renamed.map_err(|e| self.in_shard(e))?;
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

    fn write_pieces(&self, path: &Path, id: u64) -> Result<u64, CheckpointError> {
        let names: Vec<String> = self
            .pieces
            .iter()
            .map(|p| piece_name(&self.core.tensors[p.tensor].name, p.elements.start))
            .collect();
        let entries: Vec<Entry<'_>> = self
            .pieces
            .iter()
            .zip(&self.shard)
            .zip(&names)
            .map(|((p, tensor), name)| Entry {
                name,
                param_group: self.core.tensors[p.tensor].param_group,
                tensor,
            })
            .collect();
        let extra = vec![
            ("shard.rank".into(), self.collective.rank().to_string()),
            ("shard.world".into(), self.collective.world().to_string()),
            ("shard.save".into(), id.to_string()),
        ];
        checkpoint::save_with_metadata(
            path,
            &self.core.plan,
            &self.core.hyper,
            self.core.steps_taken,
            &entries,
            extra,
        )
    }

    /// Restore a checkpoint saved by any number of ranks into this rank (every rank
    /// calls it). Everything is read and checked, and every rank agrees it succeeded,
    /// before anything changes.
    pub fn load(&mut self, dir: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let read = self.read_checkpoint(dir.as_ref());
        let failed = self.agree(read.is_err());
        let (restored, whole) = read?;
        if failed > 0 {
            return Err(CheckpointError::PeerFailed { ranks: failed });
        }
        for (s, p) in self.shard.iter_mut().zip(&self.pieces) {
            *s = layout::cut(&self.core.plan, &whole[p.tensor], p);
        }
        for (param, t) in self.params.iter_mut().zip(&whole) {
            *param = t.param().clone();
        }
        self.core.steps_taken = restored.steps_taken;
        self.core.hyper = restored.hyper;
        Ok(())
    }

    /// Every shard file of the saved world, checked, and the whole tensors they hold.
    fn read_checkpoint(&self, dir: &Path) -> Result<(Restored, Vec<HostTensor>), CheckpointError> {
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
        let (segs, groups) = segments(&self.core.tensors);
        let saved = ShardLayout::new(groups, world);
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
                .map(|p| piece_name(&self.core.tensors[p.tensor].name, p.elements.start))
                .collect();
            let expected: Vec<Expected<'_>> = layout_pieces
                .iter()
                .zip(&names)
                .map(|(p, name)| Expected {
                    name,
                    len: p.elements.len(),
                    param_group: self.core.tensors[p.tensor].param_group,
                })
                .collect();
            let path = shard_file(dir, rank, world);
            let restored = checkpoint::load(&path, &self.core.plan, &self.core.hyper, &expected)
                .map_err(in_rank)?;
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
                tensors,
                steps_taken,
                hyper,
                metadata,
            } = restored;
            pieces.extend(layout_pieces.into_iter().zip(tensors));
            first.get_or_insert(Restored {
                tensors: Vec::new(),
                steps_taken,
                hyper,
                metadata,
            });
        }
        let whole = assemble(
            &self.core.plan,
            &self.core.tensors,
            pieces.iter().map(|(p, t)| (p, t)),
        );
        Ok((first.expect("a world has a rank"), whole))
    }

    /// Tell every rank whether this one failed; returns how many others did.
    fn agree(&self, failed: bool) -> usize {
        let mut count = [f64::from(u8::from(failed))];
        self.collective.all_reduce_f64(&mut count);
        count[0] as usize - usize::from(failed)
    }

    fn in_shard(&self, source: CheckpointError) -> CheckpointError {
        CheckpointError::Shard {
            rank: self.collective.rank(),
            world: self.collective.world(),
            source: Box::new(source),
        }
    }
}
