//! Values per row and per column in the kernel: a row's value is uniform over its
//! groups (one load per unit), a column's is per lane; their new values go to the write
//! halves, stored by the units of a row's first element (a tensor's first row); a pass
//! that reduces over columns meets its tiles' terms in shared memory.

use cubecl::ir::ManagedVariable;
use cubecl::prelude::*;
use flashopt_ir::{GROUP_SIZE, Storage};

use super::memory::widen;
use super::{F, KernelBody, Place, Reg, Scalar, pairwise};
use crate::codegen::bindings::{Binding, column_index, column_reductions};
use crate::codegen::emit::CUBE_DIM;
use crate::codegen::ops;

impl KernelBody<'_> {
    /// The values of the unit's lanes' columns in a per-column part (one scalar load
    /// per lane: a tensor's columns need not start 16-byte boundaries).
    pub(super) fn load_columns(
        &self,
        scope: &mut Scope,
        var: ManagedVariable,
        storage: Storage,
        place: &Place,
    ) -> Vec<Scalar> {
        let (column, _, _) = place
            .column
            .clone()
            .expect("a plan with values per column finds columns");
        with_storage_type!(storage, E => (0..self.lanes())
            .map(|l| {
                let array: NativeExpand<Array<E>> = var.clone().into();
                let at = ops::block_index::expand(scope, column.clone(), 1, l);
                let x = ops::load_scalar::expand::<E>(scope, array, at);
                widen::<E>(scope, x, storage.is_float())
            })
            .collect())
    }

    /// The columns' new values, written by the units of the tensor's first row for
    /// their real lanes.
    pub(super) fn store_columns(
        &self,
        scope: &mut Scope,
        var: ManagedVariable,
        storage: Storage,
        place: &Place,
        value: &Reg,
    ) {
        let (column, first_row, valid) = place
            .column
            .clone()
            .expect("a plan with values per column finds columns");
        let first_lane = ops::block_index::expand(scope, place.sub.clone(), self.lanes(), 0);
        with_storage_type!(storage, E => {
            for l in 0..self.lanes() {
                let array: NativeExpand<Array<E>> = var.clone().into();
                let real = ops::lane_is_real::expand(scope, valid.clone(), first_lane.clone(), l);
                let stores = ops::both::expand(scope, first_row.clone(), real);
                let stored = ops::from_f32::expand::<E>(scope, value.lane(l).f());
                let at = ops::block_index::expand(scope, column.clone(), 1, l);
                cubecl::frontend::branch::if_expand(scope, stores, |scope| {
                    ops::store_scalar::expand::<E>(scope, array, at, stored);
                });
            }
        })
    }

    /// Column reduction `k`'s value for each of the unit's lanes' columns, which the
    /// finishing launches after its phase wrote.
    pub(super) fn column_values(&self, scope: &mut Scope, k: usize, place: &Place) -> Vec<Scalar> {
        let (column, _, _) = place
            .column
            .clone()
            .expect("a plan with column reductions finds columns");
        let columns = column_reductions(self.plan).len();
        let j = column_index(self.plan, k).expect("a column reduction");
        let values: NativeExpand<Array<f32>> = self.var(Binding::ColumnValues).into();
        (0..self.lanes())
            .map(|l| {
                let lane = ops::block_index::expand(scope, column.clone(), 1, l);
                let at = ops::block_index::expand(scope, lane, columns, j);
                Scalar::F(ops::load_scalar::expand::<f32>(scope, values.clone(), at))
            })
            .collect()
    }

    /// Column reduction `k`'s value over each column of each of the cube's tiles (a
    /// band of up to 32 rows), in `reduction::reduce`'s order over the column: every
    /// unit puts its lanes' values into shared memory as its tile slots hold them (a
    /// tile's rows one after the other), then one unit per column takes the pairwise
    /// tree over the tile's rows and writes the column's band value. Every unit of
    /// the cube reaches both barriers.
    pub(super) fn column_band_values(
        &self,
        scope: &mut Scope,
        k: usize,
        value: &Reg,
        shared: &mut Option<NativeExpand<SharedMemory<f32>>>,
    ) {
        let r = self.plan.reductions[k].op;
        let (first, count) = self
            .launch
            .clone()
            .expect("a pass with column reductions is tiled");
        let cube_units = CUBE_DIM as usize;
        let groups_per_cube = cube_units / self.shape.units_per_group();
        // One array for every column reduction of the pass (32 KB at 32 lanes a unit).
        let shared = shared
            .get_or_insert_with(|| ops::new_shared::expand(scope, groups_per_cube * GROUP_SIZE))
            .clone();
        for l in 0..self.lanes() {
            ops::share_lane::expand(scope, shared.clone(), value.lane(l).f(), self.lanes(), l);
        }
        ops::barrier::expand(scope);
        let tiles: NativeExpand<Array<u32>> = self.var(Binding::TileTable).into();
        let tile = ops::column_tile::expand(
            scope,
            first.into(),
            count.clone().into(),
            cube_units,
            groups_per_cube,
        );
        let rows = ops::tile_rows::expand(scope, tiles.clone(), tile.clone());
        let terms: Vec<NativeExpand<f64>> = (0..GROUP_SIZE)
            .map(|row| {
                ops::shared_term::expand(
                    scope,
                    shared.clone(),
                    rows.clone(),
                    groups_per_cube,
                    row,
                    r,
                )
            })
            .collect();
        let band_value = pairwise(scope, terms, r);
        let reduces = ops::reduces_column::expand(
            scope,
            tiles.clone(),
            count.into(),
            tile.clone(),
            cube_units,
            groups_per_cube,
        );
        let partials: NativeExpand<Array<f64>> = self.var(Binding::ColumnPartials(k)).into();
        cubecl::frontend::branch::if_expand(scope, reduces, |scope| {
            let at = ops::column_group::expand(scope, tiles, tile);
            ops::store_scalar::expand::<f64>(scope, partials, at, band_value);
        });
        // The next column reduction of the pass reuses the shared terms.
        ops::barrier::expand(scope);
    }

    /// Row reduction `k`'s value for the group's row, which the finishing launches
    /// after its phase wrote.
    pub(super) fn row_value(&self, scope: &mut Scope, k: usize, place: &Place) -> F {
        let (row, _) = place
            .row
            .clone()
            .expect("a plan with row reductions finds rows");
        let values: NativeExpand<Array<f32>> = self.var(Binding::RowValues).into();
        let at = ops::block_index::expand(scope, row, self.plan.reductions.len(), k);
        ops::load_scalar::expand::<f32>(scope, values, at)
    }
}

/// The value of the group's row in a per-row part.
pub(super) fn load_row(
    scope: &mut Scope,
    var: ManagedVariable,
    storage: Storage,
    place: &Place,
) -> Scalar {
    let (row, _) = place
        .row
        .clone()
        .expect("a plan with values per row finds rows");
    with_storage_type!(storage, E => {
        let array: NativeExpand<Array<E>> = var.into();
        let x = ops::load_scalar::expand::<E>(scope, array, row);
        widen::<E>(scope, x, storage.is_float())
    })
}

/// The row's new value, written by the unit holding the row's first element.
pub(super) fn store_row(
    scope: &mut Scope,
    var: ManagedVariable,
    storage: Storage,
    place: &Place,
    x: F,
) {
    let (row, starts) = place
        .row
        .clone()
        .expect("a plan with values per row finds rows");
    with_storage_type!(storage, E => {
        let array: NativeExpand<Array<E>> = var.into();
        let stored = ops::from_f32::expand::<E>(scope, x);
        cubecl::frontend::branch::if_expand(scope, starts, |scope| {
            ops::store_scalar::expand::<E>(scope, array, row, stored);
        });
    })
}
