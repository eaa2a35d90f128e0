//! # flashopt-macros: the `optimizer!` DSL
//!
//! Use it through the `flashopt` crate (`flashopt::optimizer!`); the generated code
//! refers to `::flashopt`.
//!
//! ```text
//! optimizer! {
//!     /// Docs of the generated config struct.
//!     pub Signum {
//!         /// Docs of the field.
//!         hyper lr: f32 = 1e-3 in 0.0..;
//!         hyper beta: f32 = 0.9 in 0.0..1.0;
//!         hyper initial_lr: f32 = lr in 0.0..;   // defaults to lr's value at build time
//!         hyper nesterov: bool = false;
//!         state m: signed;                       // codec: int8_softsign (the default)
//!         state h: nonneg = bf16;                // codec chosen explicitly
//!
//!         m = beta * m + (1.0 - beta) * g;       // plain Rust expressions, f32
//!         let step = if nesterov { g } else { m };
//!         h = h + g * g;
//!         p -= lr * sign(step) / (h.sqrt() + 1e-8); // methods: x.sqrt() == sqrt(x)
//!     }
//!
//!     /// Starts from Signum's declarations and rule (docs/DSL.md, "Extending").
//!     pub SlowSignum extends Signum {
//!         hyper beta: f32 = 0.99 in 0.0..1.0;     // replaces Signum's in place
//!     }
//! }
//! ```
//!
//! It is a function-like macro, not an attribute on an item, because an optimizer is
//! not a Rust item: declarations carry ranges (`in 0.0..1.0`), codecs and
//! per-element statements that would not parse as a struct or a function. A
//! function-like macro parses exactly this grammar and keeps a span for every token,
//! so each IR error lands on the token that caused it.
//!
//! The macro parses with syn into `flashopt_ir::OptimizerDef`, runs validation and
//! the passes at compile time (errors become `compile_error!`s at their spans), and
//! emits a config struct with the hyper-parameters as fields (f32 hyper-parameters
//! are `f64` fields, the values the user wrote; the plan's host arithmetic decides
//! how they are rounded), its `Default`, an `OptimizerSpec` impl, and the
//! per-element rule compiled to Rust (`element_rule`, plus its token dump
//! `ELEMENT_RULE_TOKENS`), which tests hold against the interpreter. The kernels are
//! not made here: the GPU back end translates a plan's program at run time.

mod expand;
#[cfg(test)]
mod fuzz;
mod parse;

use proc_macro::TokenStream;

/// Define an optimizer: see the crate documentation for the grammar.
#[proc_macro]
pub fn optimizer(input: TokenStream) -> TokenStream {
    let block = syn::parse_macro_input!(input as parse::OptimizerBlock);
    let mut tokens = proc_macro2::TokenStream::new();
    let mut errors: Option<syn::Error> = None;
    for item in &block.items {
        match expand::expand(item) {
            Ok(t) => tokens.extend(t),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    match errors {
        Some(err) => err.to_compile_error().into(),
        None => tokens.into(),
    }
}
