//! A module's float parameters, in the order burn visits them, named by their path
//! in the module (`blocks.0.attn.wq`).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// One float parameter of a module.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub id: ParamId,
    /// The module path of the parameter, `.`-separated.
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Walks a module's float parameters with their paths.
struct Collect<F> {
    path: Vec<String>,
    on_param: F,
}

impl<B: Backend, F: FnMut(String, ParamId, Tensor<B, 1>, Vec<usize>)> ModuleVisitor<B>
    for Collect<F>
{
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let shape = tensor.shape().to_vec();
        let name = if self.path.is_empty() {
            format!("param{}", param.id)
        } else {
            self.path.join(".")
        };
        (self.on_param)(name, param.id, tensor.flatten(0, D - 1), shape);
    }
}

/// Every float parameter of `module` with its values as f32 on the host, in
/// visiting order.
pub fn collect<B: Backend, M: Module<B>>(module: &M) -> Vec<(ParamInfo, Vec<f32>)> {
    collect_where(module, |_| true)
}

/// As [`collect`], only the parameters `select` picks: the others' values are not read.
pub fn collect_where<B: Backend, M: Module<B>>(
    module: &M,
    select: impl Fn(&ParamInfo) -> bool,
) -> Vec<(ParamInfo, Vec<f32>)> {
    let mut out = Vec::new();
    module.visit(&mut Collect {
        path: Vec::new(),
        on_param: |name, id, flat: Tensor<B, 1>, shape| {
            let info = ParamInfo { id, name, shape };
            if !select(&info) {
                return;
            }
            let values = flat
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("converted to f32");
            out.push((info, values));
        },
    });
    out
}

/// Only the parameters' ids, names and shapes (no device reads).
pub fn describe<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    let mut out = Vec::new();
    module.visit(&mut Collect {
        path: Vec::new(),
        on_param: |name, id, _: Tensor<B, 1>, shape| out.push(ParamInfo { id, name, shape }),
    });
    out
}

/// Replaces every float parameter by the tensor `make` builds for it (by its index
/// in visiting order; in the parameter's shape, not marked for gradients), keeping
/// its id and whether it is trained. `make` returns a backend primitive, whose rank
/// is not part of its type, so that it builds each tensor in its own shape: burn
/// never reshapes a tensor this crate hands it.
pub(crate) struct Replace<'a, B: Backend> {
    pub index: &'a HashMap<ParamId, usize>,
    pub make: &'a mut MakeParam<'a, B>,
}

/// Builds parameter `index` (in visiting order) with `shape` on `device`.
pub(crate) type MakeParam<'a, B> =
    dyn FnMut(usize, Vec<usize>, &burn::tensor::Device<B>) -> FloatTensor<B> + 'a;

impl<B: Backend> ModuleMapper<B> for Replace<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(&i) = self.index.get(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape = tensor.shape().to_vec();
        let device = tensor.device();
        let trained = tensor.is_require_grad();
        let primitive = (self.make)(i, shape, &device);
        let value = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(primitive));
        let value = if trained { value.require_grad() } else { value };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// The index of each parameter id in visiting order.
pub(crate) fn index_of(params: &[ParamInfo]) -> HashMap<ParamId, usize> {
    params.iter().enumerate().map(|(i, p)| (p.id, i)).collect()
}
