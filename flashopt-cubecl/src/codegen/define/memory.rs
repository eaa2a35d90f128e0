//! Moving a unit's lanes between buffers and program values: vector loads and stores
//! of up to 16 bytes, from one gradient binding or the one of the group's region, and
//! the per-group scalars.

use cubecl::ir::ManagedVariable;
use cubecl::prelude::*;
use flashopt_ir::Storage;

use super::{F, Place, Scalar};
use crate::codegen::ops;

/// A unit's lanes as raw elements, loaded as vectors of `N`.
pub(super) fn load_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
) -> Vec<NativeExpand<E>> {
    let array: NativeExpand<Array<Vector<E, N>>> = var.into();
    let width = N::try_value_const().expect("constant vector width");
    let mut lanes = Vec::with_capacity(place.shape.lanes_per_unit);
    for c in 0..place.shape.lanes_per_unit / width {
        let at = place.vector_index(scope, width, c);
        let v = ops::load_vector::expand::<E, N>(scope, array.clone(), at);
        push_lanes(scope, &v, &mut lanes);
    }
    lanes
}

/// Every lane of the vector `v`, in order, onto `lanes`.
pub(super) fn push_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    v: &NativeExpand<Vector<E, N>>,
    lanes: &mut Vec<NativeExpand<E>>,
) {
    let width = N::try_value_const().expect("constant vector width");
    for k in 0..width {
        lanes.push(ops::lane::expand::<E, N>(scope, v.clone(), k));
    }
}

/// As [`load_lanes`], each vector from the binding of the region the group lies in:
/// the vectors are assigned under the regions' conditions, the lanes taken once.
pub(super) fn load_lanes_from_regions<E: Numeric, N: Size>(
    scope: &mut Scope,
    regions: &[(NativeExpand<bool>, ManagedVariable, Place)],
    place: &Place,
) -> Vec<NativeExpand<E>> {
    let width = N::try_value_const().expect("constant vector width");
    let mut lanes = Vec::with_capacity(place.shape.lanes_per_unit);
    for c in 0..place.shape.lanes_per_unit / width {
        let mut v = ops::empty_vector::expand::<E, N>(scope);
        for (inside, var, region) in regions {
            let array: NativeExpand<Array<Vector<E, N>>> = var.clone().into();
            cubecl::frontend::branch::if_expand(scope, inside.clone(), |scope| {
                let at = region.vector_index(scope, width, c);
                let loaded = ops::load_vector::expand::<E, N>(scope, array, at);
                v.expand_assign(scope, loaded);
            });
        }
        push_lanes(scope, &v, &mut lanes);
    }
    lanes
}

/// Store raw element lanes as vectors of `N`.
pub(super) fn store_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
    lanes: Vec<NativeExpand<E>>,
) {
    let array: NativeExpand<Array<Vector<E, N>>> = var.into();
    let width = N::try_value_const().expect("constant vector width");
    for c in 0..place.shape.lanes_per_unit / width {
        let v = ops::empty_vector::expand::<E, N>(scope);
        for k in 0..width {
            ops::set_lane::expand::<E, N>(scope, v.clone(), k, lanes[c * width + k].clone());
        }
        let at = place.vector_index(scope, width, c);
        ops::store_vector::expand::<E, N>(scope, array.clone(), at, v);
    }
}

/// The vector width [`buffers`] gives elements of `E`.
pub(super) fn width_of<E: CubePrimitive>(place: &Place) -> usize {
    place.shape.vector_width(size_of::<E>())
}

pub(super) fn load_raw<E: Numeric>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
) -> Vec<NativeExpand<E>> {
    match width_of::<E>(place) {
        16 => load_lanes::<E, Const<16>>(scope, var, place),
        8 => load_lanes::<E, Const<8>>(scope, var, place),
        _ => load_lanes::<E, Const<4>>(scope, var, place),
    }
}

pub(super) fn store_raw<E: Numeric>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
    lanes: Vec<NativeExpand<E>>,
) {
    match width_of::<E>(place) {
        16 => store_lanes::<E, Const<16>>(scope, var, place, lanes),
        8 => store_lanes::<E, Const<8>>(scope, var, place, lanes),
        _ => store_lanes::<E, Const<4>>(scope, var, place, lanes),
    }
}

/// A loaded element widened to a program value: f32 for float storages, i32 for
/// integer ones.
pub(super) fn widen<E: Numeric>(scope: &mut Scope, x: NativeExpand<E>, float: bool) -> Scalar {
    if float {
        Scalar::F(ops::to_f32::expand::<E>(scope, x))
    } else {
        Scalar::I(ops::to_i32::expand::<E>(scope, x))
    }
}

pub(super) fn load_elements(
    scope: &mut Scope,
    var: ManagedVariable,
    storage: Storage,
    place: &Place,
) -> Vec<Scalar> {
    with_storage_type!(storage, E => load_raw::<E>(scope, var, place)
        .into_iter()
        .map(|x| widen::<E>(scope, x, storage.is_float()))
        .collect())
}

/// Convert f32 lanes to the storage (see `InstOp::Store`) and store them.
pub(super) fn store_elements(
    scope: &mut Scope,
    var: ManagedVariable,
    storage: Storage,
    place: &Place,
    values: &[F],
) {
    with_storage_type!(storage, E => {
        let lanes = values
            .iter()
            .map(|x| ops::from_f32::expand::<E>(scope, x.clone()))
            .collect();
        store_raw::<E>(scope, var, place, lanes)
    })
}

pub(super) fn load_group(
    scope: &mut Scope,
    var: ManagedVariable,
    storage: Storage,
    place: &Place,
) -> Scalar {
    with_storage_type!(storage, E => {
        let array: NativeExpand<Array<E>> = var.into();
        let x = ops::load_scalar::expand::<E>(scope, array, place.group.clone());
        widen::<E>(scope, x, storage.is_float())
    })
}

pub(super) fn store_group(
    scope: &mut Scope,
    var: ManagedVariable,
    storage: Storage,
    place: &Place,
    x: F,
) {
    with_storage_type!(storage, E => {
        let array: NativeExpand<Array<E>> = var.into();
        let stored = ops::from_f32::expand::<E>(scope, x);
        ops::store_group_scalar::expand::<E>(
            scope,
            array,
            place.group.clone(),
            place.sub.clone(),
            stored,
        );
    })
}
