//! Every validation error names the item and says what is wrong.

use flashopt_ir::def::*;
use flashopt_ir::graph::Func2;
use flashopt_ir::{Codec, Extent, StateKind, validate};

/// A valid momentum-SGD definition to break in one place per test.
fn base() -> OptimizerDef {
    let mut def = OptimizerDef::new("sgd");
    def.hyper("lr", 0.1, Range::at_least(0.0));
    def.hyper("mu", 0.9, Range::closed_open(0.0, 1.0));
    def.state("buf", StateKind::Signed);
    def
}

fn finish(def: &mut OptimizerDef) -> &mut OptimizerDef {
    def.assign("buf", name("mu") * name("buf") + name("g"));
    def.assign("p", name("p") - name("lr") * name("buf"));
    def
}

fn errors(def: &OptimizerDef) -> Vec<String> {
    validate(def)
        .unwrap_err()
        .diagnostics
        .into_iter()
        .map(|d| d.message)
        .collect()
}

#[test]
fn the_base_definition_is_valid() {
    let rule = validate(finish(&mut base())).unwrap();
    assert_eq!(rule.states[0].codec, Codec::Int8Softsign);
}

#[test]
fn unknown_names_suggest_a_close_one() {
    let mut def = base();
    def.assign("buf", name("mu") * name("bfu") + name("g"));
    def.assign("p", name("p") - name("lr") * name("buf"));
    assert_eq!(errors(&def), ["unknown name `bfu` (did you mean `buf`?)"]);

    let mut def = base();
    def.assign("buf", name("sqrt") + name("g"));
    def.assign("p", name("p"));
    assert_eq!(
        errors(&def),
        ["unknown name `sqrt` (`sqrt` is a function: call it as `sqrt(..)`)"]
    );
}

#[test]
fn a_state_never_updated_and_p_never_assigned() {
    let mut def = base();
    def.assign("p", name("p") - name("lr") * name("g"));
    assert_eq!(
        errors(&def),
        ["state `buf` is never updated: assign it in the rule or remove it"]
    );

    let mut def = base();
    def.assign("buf", name("g"));
    assert_eq!(
        errors(&def),
        ["the rule never assigns `p`: an optimizer must update the parameter"]
    );
}

#[test]
fn outputs_are_assigned_once() {
    let mut def = base();
    finish(&mut def);
    def.assign("buf", name("g"));
    def.assign("p", name("p"));
    assert_eq!(
        errors(&def),
        [
            "state `buf` is assigned twice; each output is assigned once",
            "the parameter `p` is assigned twice; each output is assigned once"
        ]
    );
}

#[test]
fn inputs_hyper_parameters_and_bindings_are_read_only() {
    let mut def = base();
    def.bind("step", name("lr") * name("buf"));
    def.assign("g", name("p"));
    def.assign("t", name("p"));
    def.assign("lr", name("p"));
    def.assign("step", name("p"));
    def.assign("nope", name("p"));
    finish(&mut def);
    assert_eq!(
        errors(&def),
        [
            "`g` is the gradient, an input of the rule; it cannot be assigned",
            "`t` is the step counter, an input of the rule; it cannot be assigned",
            "`lr` is a hyper-parameter; hyper-parameters are read-only in the rule",
            "`step` is a let binding and cannot be reassigned; bind a new name with `let`",
            "cannot assign to unknown name `nope`: only `p` and declared states can be assigned",
        ]
    );
}

#[test]
fn type_mismatches_say_what_was_found() {
    let mut def = base();
    def.bind("bad", name("g") * name("t"));
    def.bind("cmp", binary(Func2::Lt, name("g"), float(0.0)));
    def.assign("buf", name("cmp"));
    def.assign("p", call("powi", vec![name("p"), float(2.0)]));
    assert_eq!(
        errors(&def),
        [
            "type mismatch: `*` needs two f32 or two int operands; convert an int with float(..), found f32 and int",
            "`buf` holds f32 values but is assigned a bool",
            "type mismatch: `powi` takes (f32, int), found (f32, f32)",
        ]
    );
}

/// A named function of two arguments built as an operator node is checked (and
/// lowered) as the call of its name.
#[test]
fn functions_built_as_operators_are_checked_as_their_calls() {
    let mut def = base();
    def.assign("buf", binary(Func2::Min, name("buf"), name("g")));
    def.assign("p", binary(Func2::Powi, name("p"), float(2.0)));
    assert_eq!(
        errors(&def),
        ["type mismatch: `powi` takes (f32, int), found (f32, f32)"]
    );
    let as_operator = |f| {
        let mut def = base();
        def.assign("buf", binary(f, name("buf"), name("g")));
        def.assign("p", name("p") - name("lr") * name("buf"));
        validate(&def).unwrap().to_string()
    };
    let mut called = base();
    called.assign("buf", call("min", vec![name("buf"), name("g")]));
    called.assign("p", name("p") - name("lr") * name("buf"));
    assert_eq!(
        as_operator(Func2::Min),
        validate(&called).unwrap().to_string()
    );
}

#[test]
fn integer_literals_serve_as_floats_and_int_expressions_need_float() {
    let mut def = base();
    def.assign(
        "buf",
        (int(1) - name("mu")) * name("g") + name("buf") * name("mu"),
    );
    def.assign(
        "p",
        name("p") - name("lr") * name("buf") / call("float", vec![name("t")]),
    );
    validate(&def).unwrap();
}

#[test]
fn unsupported_functions_and_wrong_arity() {
    let mut def = base();
    def.assign("buf", call("tanh", vec![name("g")]));
    def.assign("p", call("min", vec![name("p")]));
    assert_eq!(
        errors(&def),
        [
            "unsupported function `tanh`; the built-ins are: abs, sign, sqrt, rsqrt, exp, exp2, ln, float, f64, min, max, powf, powi, select, where, clamp, lerp, fma; the reductions: tensor_sum, tensor_mean, tensor_max, tensor_norm, tensor_rms, row_sum, row_mean, row_max, row_norm, row_rms, col_sum, col_mean, col_max, col_norm, col_rms; the matrix functions: orthogonalize",
            "`min` takes 2 argument(s), found 1",
        ]
    );
}

#[test]
fn reductions_take_one_per_element_float() {
    let mut def = base();
    def.bind("flag", binary(Func2::Gt, name("g"), float(0.0)));
    def.assign("buf", call("tensor_sum", vec![name("lr")]));
    def.assign(
        "p",
        name("p")
            - call("tensor_mean", vec![name("g"), name("p")])
                * call("tensor_max", vec![name("flag")]),
    );
    assert_eq!(
        errors(&def),
        [
            "`tensor_sum` of a value that is the same for every element (it uses only hyper-parameters, `t` and constants): reduce a value of `p`, `g` or a state",
            "`tensor_mean` takes 1 argument, found 2",
            "type mismatch: `tensor_max` takes (f32), found (bool)",
        ]
    );
    // The norm of a state's new value.
    let mut def = base();
    def.assign("buf", name("buf") + name("g"));
    def.assign(
        "p",
        name("p") - name("lr") * call("tensor_norm", vec![name("buf")]),
    );
    validate(&def).unwrap();
}

/// A state per row takes a value the same along its row; a row (column) reduction
/// needs a value that changes along the row (down the column); such states are f32.
#[test]
fn rows_and_columns_keep_to_their_scope() {
    let mut def = base();
    def.state("r", StateKind::NonNegative).per(Extent::Row);
    def.state_with("c", StateKind::NonNegative, Codec::Bf16)
        .per(Extent::Column);
    def.state("q", StateKind::NonNegative).per(Extent::Group);
    def.assign("r", name("g") * name("g"));
    def.assign("c", call("col_mean", vec![name("c")]));
    def.assign("q", call("tensor_mean", vec![name("g") * name("g")]));
    def.assign(
        "buf",
        call("row_rms", vec![call("row_mean", vec![name("g")])]),
    );
    def.assign("p", name("p") - name("lr") * name("buf"));
    assert_eq!(
        errors(&def),
        [
            "state `c` holds one value per column, stored in f32: it takes no codec (bf16)",
            "state `q`: a state holds one value per element, per row or per column",
            "state `r` holds one value per row, but its new value varies from element to element; reduce it first (`row_mean`, `col_mean`, ...)",
            "`col_mean` of a value that is the same down each column: it does not change down a column, so there is nothing to reduce",
            "`row_rms` of a value that is the same along each row: it does not change along a row, so there is nothing to reduce",
        ]
    );
    // A state per row from a row reduction; per column from a column reduction of a
    // value per row and column; an element's value from both.
    let mut def = base();
    def.state("r", StateKind::NonNegative).per(Extent::Row);
    def.state("c", StateKind::NonNegative).per(Extent::Column);
    def.assign(
        "r",
        name("r") + call("row_mean", vec![name("g") * name("g")]),
    );
    def.assign("c", call("col_max", vec![name("r") * name("g")]));
    def.assign("buf", name("g") / (name("r") * name("c") + float(1.0)));
    def.assign("p", name("p") - name("lr") * name("buf"));
    let rule = validate(&def).unwrap();
    assert_eq!(
        (rule.states[1].extent, rule.states[1].codec),
        (Extent::Row, Codec::F32)
    );
}

#[test]
fn hyper_parameter_defaults_must_lie_in_their_range() {
    let mut def = base();
    def.hyper("eps", -1e-8, Range::open(0.0, 1.0));
    def.hyper_value("flag", Value::Bool(true), Range::at_least(0.0));
    finish(&mut def);
    assert_eq!(
        errors(&def),
        [
            "the default of hyper-parameter `eps` is -1e-8, outside its range (0.0, 1.0)",
            "hyper-parameter `flag` is a bool and cannot have a range",
        ]
    );
}

#[test]
fn codecs_must_fit_the_state_kind() {
    let mut def = base();
    def.state_with("v", StateKind::NonNegative, Codec::Int8Softsign);
    def.state_with("w", StateKind::Signed, Codec::Uint8Sqrt);
    def.assign("v", name("g") * name("g"));
    def.assign("w", name("g"));
    finish(&mut def);
    assert_eq!(
        errors(&def),
        [
            "state `v` is nonneg but codec int8_softsign cannot store non-negative values; use one of: uint8_sqrt, bf16, f32",
            "state `w` is signed but codec uint8_sqrt cannot store signed values; use one of: int8_softsign, int8_linear, bf16, f32",
        ]
    );
}

#[test]
fn declarations_cannot_clash_or_be_shadowed() {
    let mut def = base();
    def.hyper("g", 1.0, Range::ANY);
    def.state("lr", StateKind::Signed);
    def.bind("mu", name("g"));
    finish(&mut def);
    let errs = errors(&def);
    assert!(
        errs.contains(&"hyper-parameter `g` clashes with the gradient input `g`".to_string()),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"state `lr` clashes with a hyper-parameter of that name".to_string()),
        "{errs:?}"
    );
    assert!(
        errs.contains(
            &"`let mu` shadows the hyper-parameter `mu`; choose another name for the binding"
                .to_string()
        ),
        "{errs:?}"
    );
}

#[test]
fn spans_point_at_the_offending_item() {
    let mut def = base();
    def.assign("buf", name("g") + name("oops").with_span(Span(42)));
    def.assign("p", name("p"));
    let err = validate(&def).unwrap_err();
    assert_eq!(err.diagnostics[0].span, Span(42));
    assert!(
        err.to_string()
            .starts_with("optimizer `sgd` is invalid:\n  - unknown name `oops`")
    );
}

#[test]
fn reads_before_an_assignment_see_the_old_value_and_after_it_the_new() {
    // Lion reads m before updating it; AdamW reads m after.
    let mut def = base();
    def.bind("old", name("buf"));
    def.assign("buf", name("mu") * name("buf") + name("g"));
    def.assign("p", name("p") - name("lr") * (name("buf") - name("old")));
    let rule = validate(&def).unwrap();
    let text = rule.to_string();
    assert!(text.contains("= buf\n"), "{text}");
    assert!(text.contains("p <- "), "{text}");
}
