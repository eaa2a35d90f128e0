//! One run of a program over a tensor: the tensor cut into blocks of whole groups
//! (every slot, stream and reduction share cut alike, the per-row and per-column
//! parts shared), run in parallel, each group's 32 lanes one instruction at a time.

use rayon::prelude::*;

use super::buffers::{PartMut, PartRef};
use super::scoped::{self, ScopedSlot, Terms, TermsMut};
use super::{BLOCK_GROUPS, Reductions, Slot};
use crate::layout::{Extent, Shape};
use crate::plan::Plan;
use crate::program::{InstOp, Program};
use crate::semantics::lane_op;
use crate::types::GROUP_SIZE;

/// The rows (columns) of a per-row (per-column) part one block stores: the index of
/// the first, and their values.
pub(super) type StoredRows<'a> = (usize, &'a mut [f32]);

/// One parallel work item: whole groups of every slot and stream.
struct Block<'a> {
    /// The index of its first element in the tensor.
    first: usize,
    slots: Vec<Option<Slot<'a>>>,
    /// Per part of one value per row or column, in place of its slot.
    scoped: Vec<Option<ScopedSlot<'a>>>,
    /// Per reduction and matrix function, this block's terms.
    terms: Vec<TermsMut<'a>>,
    inputs: Vec<&'a [f32]>,
    outputs: Vec<&'a mut [f32]>,
    len: usize,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn execute<'a>(
    plan: &Plan,
    program: &Program,
    scalars: &[f32],
    slots: Vec<Slot<'a>>,
    reductions: Reductions<'a>,
    inputs: &[&'a [f32]],
    outputs: Vec<&'a mut [f32]>,
    shape: Shape,
) {
    let len = shape.len;
    if len == 0 {
        return;
    }
    let elements = BLOCK_GROUPS * GROUP_SIZE;
    let blocks = len.div_ceil(elements);
    let block_elements = |b: usize| b * elements..((b + 1) * elements).min(len);
    // A per-row or per-column part: every block reads all of it as it was, and writes
    // the rows (columns) its elements store.
    let mut before: Vec<Vec<f32>> = Vec::new();
    let mut scoped_new: Vec<Option<Vec<StoredRows<'a>>>> = Vec::new();
    let mut split: Vec<std::vec::IntoIter<Slot<'a>>> = Vec::new();
    for (slot, part) in slots.into_iter().zip(&plan.parts) {
        let per = match part.extent {
            Extent::Element => elements,
            Extent::Group => BLOCK_GROUPS,
            Extent::Row | Extent::Column => {
                let (old, new) = match slot {
                    Slot::Read(PartRef::F32(v)) => (v.to_vec(), None),
                    Slot::Write(PartMut::F32(v)) => {
                        let old = v.to_vec();
                        let mut rest = v;
                        let mut pieces = Vec::with_capacity(blocks);
                        let mut at = 0;
                        for b in 0..blocks {
                            let range = scoped::stored_range(part.extent, shape, block_elements(b));
                            let (_, tail) = rest.split_at_mut(range.start - at);
                            let (piece, tail) = tail.split_at_mut(range.len());
                            pieces.push((range.start, piece));
                            rest = tail;
                            at = range.end;
                        }
                        (old, Some(pieces))
                    }
                    Slot::Absent => (Vec::new(), None),
                    _ => panic!("a part of one value per row or column is stored in f32"),
                };
                before.push(old);
                scoped_new.push(new);
                split.push(Vec::new().into_iter());
                continue;
            }
        };
        before.push(Vec::new());
        scoped_new.push(None);
        split.push(slot.split(per).into_iter());
    }
    let mut scoped_new: Vec<_> = scoped_new
        .into_iter()
        .map(|p| p.map(Vec::into_iter))
        .collect();
    let mut terms: Vec<&'a mut Terms> = reductions.terms;
    let mut inputs: Vec<std::slice::Chunks<'a, f32>> =
        inputs.iter().map(|s| s.chunks(elements)).collect();
    let mut outputs: Vec<std::slice::ChunksMut<'a, f32>> = outputs
        .into_iter()
        .map(|s| s.chunks_mut(elements))
        .collect();
    let before = &before;
    let mut work: Vec<Block<'_>> = Vec::with_capacity(blocks);
    let mut term_blocks: Vec<Vec<TermsMut<'_>>> = (0..blocks).map(|_| Vec::new()).collect();
    for t in terms.iter_mut() {
        for (b, share) in split_terms(t, blocks).into_iter().enumerate() {
            term_blocks[b].push(share);
        }
    }
    for (b, block_terms) in term_blocks.into_iter().enumerate() {
        let range = block_elements(b);
        work.push(Block {
            first: range.start,
            slots: split.iter_mut().map(Iterator::next).collect(),
            scoped: plan
                .parts
                .iter()
                .zip(scoped_new.iter_mut())
                .zip(before)
                .map(|((part, new), old)| {
                    part.extent.is_scoped().then(|| ScopedSlot {
                        extent: part.extent,
                        old,
                        new: new.as_mut().and_then(Iterator::next),
                    })
                })
                .collect(),
            terms: block_terms,
            // A stream the program does not use may be empty: an empty slice each block.
            inputs: inputs
                .iter_mut()
                .map(|c| c.next().unwrap_or_default())
                .collect(),
            outputs: outputs
                .iter_mut()
                .map(|c| c.next().unwrap_or_default())
                .collect(),
            len: range.len(),
        });
    }
    let operands: Vec<[usize; 3]> = program
        .insts
        .iter()
        .map(|inst| {
            let mut slots = [0; 3];
            for (slot, o) in inst.op.operands().into_iter().enumerate() {
                slots[slot] = o.index();
            }
            slots
        })
        .collect();
    let run = Run {
        plan,
        program,
        scalars,
        shape,
        reduced: reductions.values,
        operands: &operands,
    };
    work.into_par_iter().for_each_init(
        || vec![[0u32; GROUP_SIZE]; program.len()],
        |regs, mut block| run.block(&mut block, regs),
    );
}

/// A reduction's terms cut into one share per block of [`BLOCK_GROUPS`] groups.
fn split_terms<'t>(terms: &'t mut Terms, blocks: usize) -> Vec<TermsMut<'t>> {
    match terms {
        Terms::None => (0..blocks).map(|_| TermsMut::None).collect(),
        Terms::Groups(g) => g
            .chunks_mut(BLOCK_GROUPS)
            .map(TermsMut::Groups)
            .chain(std::iter::repeat_with(|| TermsMut::None))
            .take(blocks)
            .collect(),
        Terms::Elements(e) => e
            .chunks_mut(BLOCK_GROUPS * GROUP_SIZE)
            .map(TermsMut::Elements)
            .chain(std::iter::repeat_with(|| TermsMut::None))
            .take(blocks)
            .collect(),
    }
}

/// What every block of one run shares.
struct Run<'r> {
    plan: &'r Plan,
    program: &'r Program,
    scalars: &'r [f32],
    shape: Shape,
    /// The values of the reductions and matrix functions computed before this run.
    reduced: &'r [Vec<f32>],
    /// Each instruction's operand indices (unused slots 0).
    operands: &'r [[usize; 3]],
}

impl Run<'_> {
    fn block(&self, b: &mut Block<'_>, regs: &mut [[u32; GROUP_SIZE]]) {
        let (plan, program, scalars) = (self.plan, self.program, self.scalars);
        let shape = self.shape;
        for start in (0..b.len).step_by(GROUP_SIZE) {
            let len = GROUP_SIZE.min(b.len - start);
            let group = start / GROUP_SIZE;
            // The index in the tensor of the group's first element.
            let first = b.first + start;
            for (i, inst) in program.insts.iter().enumerate() {
                let mut out = [0u32; GROUP_SIZE];
                match inst.op {
                    InstOp::Load(p) if plan.part(p).extent.is_scoped() => {
                        let slot = b.scoped[p.index()].as_ref().expect("a scoped slot");
                        for (l, o) in out[..len].iter_mut().enumerate() {
                            *o = slot.old[scoped::index(slot.extent, shape, first + l)].to_bits();
                        }
                    }
                    InstOp::Store(p, v) if plan.part(p).extent.is_scoped() => {
                        let slot = b.scoped[p.index()].as_mut().expect("a scoped slot");
                        let (from, new) = slot.new.as_mut().expect("the run writes this part");
                        for (l, &x) in regs[v.index()][..len].iter().enumerate() {
                            let at = first + l;
                            if scoped::stores(slot.extent, shape, at) {
                                new[scoped::index(slot.extent, shape, at) - *from] =
                                    f32::from_bits(x);
                            }
                        }
                        continue;
                    }
                    InstOp::Load(p) => {
                        let slot = b.slots[p.index()].as_ref().expect("a slot per part");
                        match plan.part(p).extent {
                            Extent::Element => {
                                for (l, o) in out[..len].iter_mut().enumerate() {
                                    *o = slot.get(start + l);
                                }
                            }
                            Extent::Group => out = [slot.get(group); GROUP_SIZE],
                            Extent::Row | Extent::Column => unreachable!("a scoped slot"),
                        }
                    }
                    InstOp::Store(p, v) => {
                        let slot = b.slots[p.index()].as_mut().expect("a slot per part");
                        let value = &regs[v.index()];
                        match plan.part(p).extent {
                            Extent::Element => {
                                for (l, &x) in value[..len].iter().enumerate() {
                                    slot.set(start + l, f32::from_bits(x));
                                }
                            }
                            Extent::Group => slot.set(group, f32::from_bits(value[0])),
                            Extent::Row | Extent::Column => unreachable!("a scoped slot"),
                        }
                        continue;
                    }
                    InstOp::Input(k) => {
                        for (l, o) in out[..len].iter_mut().enumerate() {
                            *o = b.inputs[k][start + l].to_bits();
                        }
                    }
                    InstOp::Output(k, v) => {
                        let out = &mut b.outputs[k][start..start + len];
                        for (o, &x) in out.iter_mut().zip(&regs[v.index()][..len]) {
                            *o = f32::from_bits(x);
                        }
                        continue;
                    }
                    InstOp::Scalar(k) => out = [scalars[k].to_bits(); GROUP_SIZE],
                    InstOp::Reduced(k) => {
                        let values = &self.reduced[k];
                        match plan.reductions[k].scope.extent() {
                            None => out = [values[0].to_bits(); GROUP_SIZE],
                            Some(extent) => {
                                for (l, o) in out[..len].iter_mut().enumerate() {
                                    *o = values[scoped::index(extent, shape, first + l)].to_bits();
                                }
                            }
                        }
                    }
                    InstOp::MatrixResult(m) => {
                        let result = &self.reduced[plan.reductions.len() + m];
                        for (l, o) in out[..len].iter_mut().enumerate() {
                            *o = result[first + l].to_bits();
                        }
                    }
                    InstOp::Dim(d) => out = [(d.of(shape) as f32).to_bits(); GROUP_SIZE],
                    InstOp::MatrixArg(m, v) => {
                        let TermsMut::Elements(terms) = &mut b.terms[plan.reductions.len() + m]
                        else {
                            unreachable!("a phase has its matrix functions' arguments")
                        };
                        for (t, &bits) in terms[start..start + len].iter_mut().zip(&regs[v.index()])
                        {
                            *t = f32::from_bits(bits);
                        }
                        continue;
                    }
                    InstOp::Reduce(k, v) => {
                        let mut values = [0.0f32; GROUP_SIZE];
                        for (x, &bits) in values.iter_mut().zip(&regs[v.index()][..len]) {
                            *x = f32::from_bits(bits);
                        }
                        match &mut b.terms[k] {
                            TermsMut::Groups(groups) => {
                                let r = plan.reductions[k].op;
                                groups[group] = crate::reduction::group_value(r, &values[..len]);
                            }
                            TermsMut::Elements(terms) => {
                                terms[start..start + len].copy_from_slice(&values[..len]);
                            }
                            TermsMut::None => unreachable!("a phase has its reductions' terms"),
                        }
                        continue;
                    }
                    InstOp::GroupMax(v) => {
                        let max = regs[v.index()][..len]
                            .iter()
                            .fold(f32::NEG_INFINITY, |m, &x| m.max(f32::from_bits(x)));
                        out = [max.to_bits(); GROUP_SIZE];
                    }
                    InstOp::Table(t, v) => {
                        let table = &plan.tables[t.index()];
                        for l in 0..len {
                            let code = regs[v.index()][l] as i32;
                            out[l] = table.values[(code - table.first) as usize].to_bits();
                        }
                    }
                    op => {
                        let [a, c, d] = self.operands[i];
                        for (l, o) in out[..len].iter_mut().enumerate() {
                            let args = [regs[a][l], regs[c][l], regs[d][l]];
                            *o = lane_op(&op, args).expect("a lane operation");
                        }
                    }
                }
                regs[i] = out;
            }
        }
    }
}
