//! The optimizers flashopt ships, written against the IR.

use flashopt_ir::StateKind;
use flashopt_ir::def::{OptimizerDef, Range, call, name};

/// AdamW with decoupled weight decay, in flashoptim 0.1.4's operation order:
///
/// ```text
/// m = m * b1 + g * (1 - b1)
/// v = v * b2 + g * g * (1 - b2)
/// p = p * (1 - lr * weight_decay) - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
/// ```
///
/// `1 - b1^t`, `1 - b2^t`, `1 - b1`, `1 - b2` and `1 - lr * weight_decay` are host
/// scalars (f64, rounded to f32 once per step); flashoptim computes them in f32 on the
/// device, which can differ in the last bit of the scalar.
pub fn adamw() -> OptimizerDef {
    let mut def = OptimizerDef::new("adamw");
    def.hyper("lr", 1e-3, Range::at_least(0.0))
        .hyper("b1", 0.9, Range::closed_open(0.0, 1.0))
        .hyper("b2", 0.999, Range::closed_open(0.0, 1.0))
        .hyper("eps", 1e-8, Range::at_least(0.0))
        .hyper("weight_decay", 1e-2, Range::at_least(0.0));
    def.state("m", StateKind::Signed)
        .state("v", StateKind::NonNegative);
    def.assign("m", name("m") * name("b1") + name("g") * (1.0 - name("b1")));
    def.assign(
        "v",
        name("v") * name("b2") + name("g") * name("g") * (1.0 - name("b2")),
    );
    def.bind("bias1", 1.0 - call("powi", vec![name("b1"), name("t")]));
    def.bind("bias2", 1.0 - call("powi", vec![name("b2"), name("t")]));
    def.assign(
        "p",
        name("p") * (1.0 - name("lr") * name("weight_decay"))
            - name("lr") * (name("m") / name("bias1"))
                / (call("sqrt", vec![name("v") / name("bias2")]) + name("eps")),
    );
    def
}
