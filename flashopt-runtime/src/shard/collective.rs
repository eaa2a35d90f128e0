//! The three collectives a sharded step needs, and an in-process implementation
//! (ranks as threads of one process) for tests and the CPU reference.

use std::sync::{Arc, Barrier, Mutex};

use crate::raw;

/// What every rank of a sharded optimizer calls, in the same order, with equal
/// lengths (NCCL's semantics; on GPUs, NCCL itself).
pub trait Collective {
    fn rank(&self) -> usize;

    fn world(&self) -> usize;

    /// `send` holds `world` equal blocks; `recv` (one block) gets the element-wise
    /// sum over ranks of block `rank`.
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]);

    /// `recv` gets every rank's `send` (equal lengths), in rank order.
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]);

    /// The element-wise sum over ranks, in place.
    fn all_reduce_f64(&self, values: &mut [f64]);
}

/// Ranks as threads of one process: each contribution is posted, all ranks meet,
/// each reads what it needs, all meet again. Sums run in rank order, so results
/// are reproducible. Made for tests (N shards on the CPU reference, no NCCL).
#[derive(Clone, Debug)]
pub struct LocalCollective {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    posted: Mutex<Vec<Vec<u8>>>,
}

impl LocalCollective {
    /// One handle per rank of a world of `world`; give each to its own thread.
    pub fn world_of(world: usize) -> Vec<LocalCollective> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world),
            posted: Mutex::new(vec![Vec::new(); world]),
        });
        (0..world)
            .map(|rank| LocalCollective {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Post `bytes`, wait for every rank's, read them all with `read`, and wait until
    /// every rank has read before anyone posts again.
    fn exchange<T>(&self, bytes: Vec<u8>, read: impl FnOnce(&[Vec<u8>]) -> T) -> T {
        self.shared.posted.lock().expect("a rank panicked")[self.rank] = bytes;
        self.shared.barrier.wait();
        let out = read(&self.shared.posted.lock().expect("a rank panicked"));
        self.shared.barrier.wait();
        out
    }
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.shared.posted.lock().expect("a rank panicked").len()
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) {
        let block = recv.len();
        let start = 4 * self.rank * block;
        self.exchange(raw::le_bytes(send), |all| {
            recv.fill(0.0);
            for posted in all {
                let theirs: Vec<f32> = raw::from_le(&posted[start..start + 4 * block]);
                for (r, x) in recv.iter_mut().zip(theirs) {
                    *r += x;
                }
            }
        });
    }

    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) {
        self.exchange(send.to_vec(), |all| {
            for (out, posted) in recv.chunks_mut(send.len().max(1)).zip(all) {
                out.copy_from_slice(posted);
            }
        });
    }

    fn all_reduce_f64(&self, values: &mut [f64]) {
        self.exchange(raw::le_bytes(values), |all| {
            values.fill(0.0);
            for posted in all {
                for (v, x) in values.iter_mut().zip(raw::from_le::<f64>(posted)) {
                    *v += x;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_collectives_across_three_threads() {
        let results: Vec<(Vec<f32>, Vec<u8>, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = LocalCollective::world_of(3)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank() as f32;
                        let send: Vec<f32> = (0..6).map(|i| i as f32 + 10.0 * r).collect();
                        let mut block = vec![0.0; 2];
                        c.reduce_scatter_f32(&send, &mut block);
                        let mut gathered = vec![0; 6];
                        c.all_gather_bytes(&[c.rank() as u8; 2], &mut gathered);
                        let mut sum = [1.0, c.rank() as f64];
                        c.all_reduce_f64(&mut sum);
                        (block, gathered, sum.to_vec())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Block k of the sum: (2k + j) * 3 + 10 * (0 + 1 + 2).
        assert_eq!(results[0].0, [30.0, 33.0]);
        assert_eq!(results[2].0, [42.0, 45.0]);
        for (_, gathered, sum) in &results {
            assert_eq!(gathered, &[0, 0, 1, 1, 2, 2]);
            assert_eq!(sum, &[3.0, 3.0]);
        }
    }
}
