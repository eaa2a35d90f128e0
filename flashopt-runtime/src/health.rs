//! The state a rule like Adam's divides by, watched for the failure 8-bit storage
//! allows: a non-negative state (a second moment) whose code is 0, so that it decodes
//! to exactly 0, on an element whose signed state (a momentum) decodes to something
//! else. Adam's step there is `lr * m_hat / eps`, not at most a few `lr`.
//!
//! Two ways in: the element's code rounds to 0 (its `sqrt(v)` under 1/510 of its
//! group's largest), or its whole group's f16 scale does (the group's largest
//! `sqrt(v)` under 2^-25, f16's half smallest subnormal, while the momentum's
//! scale, which is `|m|`'s largest and not `sqrt(v)`'s, is still representable).
//! Counted from the stored codes and scales, so it reads what the next step decodes.

use flashopt_ir::interp::{HostTensor, PartData};
use flashopt_ir::{GROUP_SIZE, Plan, StateKind};
use half::f16;

/// One tensor's count of elements in the failure state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHealth {
    pub tensor: String,
    /// Elements whose non-negative state decodes to 0 while a signed state does not.
    pub zero_denominators: usize,
    /// Of those, the ones whose whole group's non-negative scale is 0 in f16.
    pub in_zero_scale_groups: usize,
}

impl std::fmt::Display for StateHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}`: {} element(s) whose second moment decodes to 0 under a non-zero momentum ({} in groups whose scale is 0 in f16)",
            self.tensor, self.zero_denominators, self.in_zero_scale_groups
        )
    }
}

/// The codes and scales of the plan's quantized states of `kind`.
fn quantized<'a>(
    plan: &Plan,
    tensor: &'a HostTensor,
    kind: StateKind,
) -> Vec<(&'a PartData, &'a [f16])> {
    plan.states
        .iter()
        .filter(|s| s.kind == kind && s.codec.quantizes())
        .filter_map(|s| {
            let codes = tensor.part(plan, &format!("{}::codes", s.name))?;
            match tensor.part(plan, &format!("{}::scales", s.name))? {
                PartData::F16(scales) => Some((codes, scales.as_slice())),
                _ => None,
            }
        })
        .collect()
}

fn code_is_zero(codes: &PartData, i: usize) -> bool {
    match codes {
        PartData::I8(c) => c[i] == 0,
        PartData::U8(c) => c[i] == 0,
        PartData::I16(c) => c[i] == 0,
        _ => false,
    }
}

/// An element's state decodes to 0 when its code or its group's scale is 0.
fn decodes_to_zero((codes, scales): &(&PartData, &[f16]), i: usize) -> bool {
    code_is_zero(codes, i) || scales[i / GROUP_SIZE].to_f32() == 0.0
}

/// The elements of one tensor in the failure state, by index; `None` for a plan
/// without both a quantized non-negative state and a quantized signed state.
pub fn zero_denominator_elements(plan: &Plan, tensor: &HostTensor) -> Option<Vec<usize>> {
    let nonneg = quantized(plan, tensor, StateKind::NonNegative);
    let signed = quantized(plan, tensor, StateKind::Signed);
    if nonneg.is_empty() || signed.is_empty() {
        return None;
    }
    Some(
        (0..tensor.len())
            .filter(|&i| {
                nonneg.iter().any(|s| decodes_to_zero(s, i))
                    && signed.iter().any(|s| !decodes_to_zero(s, i))
            })
            .collect(),
    )
}

/// The failure state's count in one tensor (see [`zero_denominator_elements`]).
pub fn tensor_health(plan: &Plan, name: &str, tensor: &HostTensor) -> Option<StateHealth> {
    let elements = zero_denominator_elements(plan, tensor)?;
    let nonneg = quantized(plan, tensor, StateKind::NonNegative);
    let in_zero_scale_groups = elements
        .iter()
        .filter(|&&i| {
            nonneg
                .iter()
                .any(|(_, scales)| scales[i / GROUP_SIZE].to_f32() == 0.0)
        })
        .count();
    Some(StateHealth {
        tensor: name.to_string(),
        zero_denominators: elements.len(),
        in_zero_scale_groups,
    })
}
