//! `bf16` and `f32`: states kept as plain floats (bf16 rounded to nearest even).

use super::{CodeRounding, StateCodec};
use crate::layout::{Extent, Part, PartId, Role, Storage};
use crate::program::{Builder, ValueId, ValueType};

pub struct Plain(pub Storage);

impl StateCodec for Plain {
    fn parts(&self, state: &str) -> Vec<Part> {
        vec![Part::new(
            format!("{state}::codes"),
            self.0,
            Extent::Element,
            Role::State,
        )]
    }

    fn decode(&self, b: &mut Builder, parts: &[PartId]) -> ValueId {
        b.load(parts[0], ValueType::F32)
    }

    /// A float storage rounds to nearest even; validation allows no other rounding.
    fn encode(&self, b: &mut Builder, parts: &[PartId], x: ValueId, _: CodeRounding) {
        b.store(parts[0], x);
    }
}
