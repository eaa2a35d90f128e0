//! Code generation: the config struct, its `OptimizerSpec` impl (which rebuilds the
//! definition at run time), and the per-element rule as Rust.

use flashopt_ir::def::{
    Bound, Expr, ExprKind, HyperParamDef, Literal as Lit, OptimizerDef, Range, StateDef, Stmt,
    Value,
};
use flashopt_ir::graph::{Const, Func1, Func2, Handle, Input, Op};
use flashopt_ir::passes::Hoisted;
use flashopt_ir::{CompileError, Type};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::parse::OptimizerInput;

/// Run the compiler on the definition, mapping every problem to its source span.
fn check(input: &OptimizerInput) -> syn::Result<Hoisted> {
    let to_error = |e: CompileError| match e {
        CompileError::Invalid(v) => v
            .diagnostics
            .iter()
            .map(|d| syn::Error::new(input.span(d.span), &d.message))
            .reduce(|mut all, e| {
                all.combine(e);
                all
            })
            .expect("an invalid definition has at least one diagnostic"),
        other => syn::Error::new(input.ident.span(), other.to_string()),
    };
    flashopt_ir::prepare(&input.def).map_err(to_error)
}

pub fn expand(input: &OptimizerInput) -> syn::Result<TokenStream> {
    let hoisted = check(input)?;
    let ident = &input.ident;
    let vis = &input.vis;
    let attrs = &input.attrs;
    let name = &input.def.name;
    let definition = definition_tokens(&input.def);

    let hypers = &input.def.hyper_params;
    let mut fields = Vec::new();
    let mut defaults = Vec::new();
    let mut sets = Vec::new();
    for (field, hyper) in input.fields.iter().zip(hypers) {
        let field_ident = &field.ident;
        let field_attrs = &field.attrs;
        let key = &hyper.name;
        let (ty, default, doc) = match &hyper.follows {
            Some(source) => {
                let source_ident = format_ident!("{source}");
                sets.push(
                    quote!(values.set(#key, self.#field_ident.unwrap_or(self.#source_ident))?;),
                );
                (
                    quote!(::core::option::Option<f64>),
                    quote!(::core::option::Option::None),
                    format!(
                        "`None`: `{source}`'s value when the optimizer is built. Range {}.",
                        hyper.range
                    ),
                )
            }
            None => {
                sets.push(quote!(values.set(#key, self.#field_ident)?;));
                let (ty, value) = match hyper.default {
                    Value::Float(v) => {
                        (quote!(f64), Literal::f64_unsuffixed(v).into_token_stream())
                    }
                    Value::Int(v) => (quote!(i64), Literal::i64_suffixed(v).into_token_stream()),
                    Value::Bool(v) => (quote!(bool), quote!(#v)),
                };
                let range = if hyper.range == Range::ANY {
                    String::new()
                } else {
                    format!(", range {}", hyper.range)
                };
                (ty, value, format!("Default `{}`{range}.", hyper.default))
            }
        };
        let separator = if field_attrs.is_empty() {
            quote!()
        } else {
            quote!(#[doc = ""])
        };
        fields.push(quote! {
            #(#field_attrs)*
            #separator
            #[doc = #doc]
            pub #field_ident: #ty,
        });
        defaults.push(quote!(#field_ident: #default,));
    }

    let rule = element_rule(&hoisted);
    // One statement a line, whatever line breaks the compiler's token printer chose.
    let rule_text = rule
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("; ", ";\n");
    let states = hoisted.rule.states.len();
    let scalars = hoisted.host.scalars.len();

    Ok(quote! {
        #(#attrs)*
        #[derive(Clone, Debug, PartialEq)]
        #vis struct #ident {
            #(#fields)*
        }

        impl ::core::default::Default for #ident {
            fn default() -> Self {
                #ident { #(#defaults)* }
            }
        }

        impl ::flashopt::ir::OptimizerSpec for #ident {
            const NAME: &'static str = #name;

            fn definition() -> ::flashopt::ir::OptimizerDef {
                #definition
            }

            fn hyper_values(&self) -> ::core::result::Result<::flashopt::ir::HyperValues, ::flashopt::ir::HyperError> {
                let def = <Self as ::flashopt::ir::OptimizerSpec>::definition();
                let mut values = ::flashopt::ir::HyperValues::defaults(&def.hyper_params);
                #(#sets)*
                ::core::result::Result::Ok(values)
            }
        }

        impl #ident {
            /// Number of host scalars `element_rule` takes: the first of the plan's host
            /// scalars (the plan appends reciprocals of divisors among them).
            pub const SCALARS: usize = #scalars;

            /// The token dump of [`Self::element_rule`]: the rule's per-element
            /// arithmetic, as Rust.
            pub const ELEMENT_RULE_TOKENS: &'static str = #rule_text;

            /// The per-element rule in f32, in the plan's operation order: the decoded
            /// master weight, the gradient, the decoded states and this step's host
            /// scalars in (then, for a rule with reductions, matrix functions or `rows`
            /// and `cols`, their values for this element, in the order the rule first
            /// uses them: the `k`-th at `scalars[Self::SCALARS + k]`); the new master
            /// weight and states out.
            #[allow(clippy::all, unused_variables, unused_parens)]
            pub fn element_rule(p: f32, g: f32, states: [f32; #states], scalars: &[f32]) -> (f32, [f32; #states]) {
                #rule
            }
        }
    })
}

trait IntoTokenStream {
    fn into_token_stream(self) -> TokenStream;
}

impl IntoTokenStream for Literal {
    fn into_token_stream(self) -> TokenStream {
        quote!(#self)
    }
}

/// The identifier of an IR enum variant (its `Debug` text), for paths in the output.
fn variant(v: impl std::fmt::Debug) -> proc_macro2::Ident {
    proc_macro2::Ident::new(&format!("{v:?}"), proc_macro2::Span::call_site())
}

fn f64_tokens(v: f64) -> TokenStream {
    if v.is_finite() {
        Literal::f64_unsuffixed(v).into_token_stream()
    } else {
        let bits = v.to_bits();
        quote!(f64::from_bits(#bits))
    }
}

fn f32_tokens(v: f32) -> TokenStream {
    if v.is_finite() {
        Literal::f32_suffixed(v).into_token_stream()
    } else {
        let bits = v.to_bits();
        quote!(f32::from_bits(#bits))
    }
}

fn value_tokens(v: Value) -> TokenStream {
    match v {
        Value::Float(x) => {
            let x = f64_tokens(x);
            quote!(Value::Float(#x))
        }
        Value::Int(i) => quote!(Value::Int(#i)),
        Value::Bool(b) => quote!(Value::Bool(#b)),
    }
}

fn bound_tokens(b: Bound) -> TokenStream {
    match b {
        Bound::Unbounded => quote!(Bound::Unbounded),
        Bound::Inclusive(v) => {
            let v = f64_tokens(v);
            quote!(Bound::Inclusive(#v))
        }
        Bound::Exclusive(v) => {
            let v = f64_tokens(v);
            quote!(Bound::Exclusive(#v))
        }
    }
}

/// An expression as calls of `flashopt_ir::def`'s builders.
fn expr_tokens(e: &Expr) -> TokenStream {
    match &e.kind {
        ExprKind::Lit(Lit::Float(v)) => {
            let v = f64_tokens(*v);
            quote!(float(#v))
        }
        ExprKind::Lit(Lit::Int(v)) => quote!(int(#v)),
        ExprKind::Lit(Lit::Bool(v)) => quote!(boolean(#v)),
        ExprKind::Name(n) => quote!(name(#n)),
        ExprKind::Unary(op, a) => {
            let op = variant(op);
            let a = expr_tokens(a);
            quote!(unary(UnaryOp::#op, #a))
        }
        ExprKind::Binary(op, a, b) => {
            let op = variant(op);
            let (a, b) = (expr_tokens(a), expr_tokens(b));
            quote!(binary(Func2::#op, #a, #b))
        }
        ExprKind::Call(f, args) => {
            let args = args.iter().map(expr_tokens);
            quote!(call(#f, vec![#(#args),*]))
        }
    }
}

/// The definition as `OptimizerDef`'s builder calls, so that the generated code
/// names no field of the model.
fn definition_tokens(def: &OptimizerDef) -> TokenStream {
    let name = &def.name;
    let hypers = def.hyper_params.iter().map(|h: &HyperParamDef| {
        let n = &h.name;
        let (lo, hi) = (bound_tokens(h.range.lo), bound_tokens(h.range.hi));
        let range = quote!(Range { lo: #lo, hi: #hi });
        match &h.follows {
            Some(source) => quote!(def.hyper_following(#n, #source, #range);),
            None => {
                let default = value_tokens(h.default);
                quote!(def.hyper_value(#n, #default, #range);)
            }
        }
    });
    let states = def.states.iter().map(|s: &StateDef| {
        let n = &s.name;
        let kind = variant(s.kind);
        let kind = quote!(::flashopt::ir::StateKind::#kind);
        let codec = match s.codec {
            Some(c) => {
                let c = variant(c);
                quote!(::core::option::Option::Some(::flashopt::ir::Codec::#c))
            }
            None => quote!(::core::option::Option::None),
        };
        let rounding = variant(s.rounding);
        let per = match s.extent {
            ::flashopt_ir::layout::Extent::Element => quote!(),
            extent => {
                let e = variant(extent);
                quote!(.per(::flashopt::ir::layout::Extent::#e))
            }
        };
        quote!(def.state_rounded(#n, #kind, #codec, ::flashopt::ir::Rounding::#rounding)#per;)
    });
    let body = def.body.iter().map(|s| match s {
        Stmt::Let { name, value, .. } => {
            let v = expr_tokens(value);
            quote!(def.bind(#name, #v);)
        }
        Stmt::Assign { target, value, .. } => {
            let v = expr_tokens(value);
            quote!(def.assign(#target, #v);)
        }
    });
    let learning_rate = def
        .learning_rate
        .as_ref()
        .map(|(lr, _)| quote!(def.learning_rate(#lr);));
    let min_step = def.min_step_relative_to_lr.map(|(v, _)| {
        let v = Literal::f64_unsuffixed(v);
        quote!(def.min_step_relative_to_lr(#v);)
    });
    quote! {
        use ::flashopt::ir::def::*;
        let mut def = OptimizerDef::new(#name);
        #(#hypers)*
        #(#states)*
        #learning_rate
        #min_step
        #(#body)*
        def
    }
}

/// A constant as per-element code sees it (booleans 1 / 0, integers exact).
fn const_f32(c: Const) -> f32 {
    match c {
        Const::Float(x) => x as f32,
        Const::Int(i) => i as f32,
        Const::Bool(b) => f32::from(u8::from(b)),
    }
}

/// The per-element rule as Rust, from the hoisted rule's graph in its order (the
/// order the lowering emits it in).
fn element_rule(hoisted: &Hoisted) -> TokenStream {
    let rule = &hoisted.rule;
    let g = &rule.graph;
    let live = g.reachable(&rule.outputs());
    let v = |h: Handle| format_ident!("v{}", h.0);
    let mut lines = Vec::new();
    let host_scalars = hoisted.host.scalars.len();
    let mut reductions = 0;
    for (h, node) in g.iter().filter(|(h, _)| live[h.index()]) {
        let out = v(h);
        let value = match node.op {
            Op::Input(Input::Param) => quote!(p),
            Op::Input(Input::Grad) => quote!(g),
            Op::Input(Input::State(k)) => {
                let k = Literal::usize_unsuffixed(k);
                quote!(states[#k])
            }
            Op::Input(Input::Scalar(k)) => {
                let k = Literal::usize_unsuffixed(k);
                quote!(scalars[#k])
            }
            Op::Input(other @ (Input::Hyper(_) | Input::Step)) => {
                unreachable!("{other:?} is hoisted")
            }
            Op::Const(c) => f32_tokens(const_f32(c)),
            Op::Unary(Func1::Neg, a) => {
                let a = v(a);
                quote!(-#a)
            }
            Op::Unary(Func1::Sqrt, a) => {
                let a = v(a);
                quote!(#a.sqrt())
            }
            Op::Unary(f, a) => {
                let (f, a) = (variant(f), v(a));
                quote!(::flashopt::ir::semantics::unary_f32(::flashopt::ir::graph::Func1::#f, #a))
            }
            Op::Binary(f, a, b) => {
                let (a, b) = (v(a), v(b));
                match f {
                    Func2::Add => quote!(#a + #b),
                    Func2::Sub => quote!(#a - #b),
                    Func2::Mul => quote!(#a * #b),
                    Func2::Div => quote!(#a / #b),
                    f => {
                        let f = variant(f);
                        quote!(::flashopt::ir::semantics::binary_f32(::flashopt::ir::graph::Func2::#f, #a, #b))
                    }
                }
            }
            Op::Ternary(f, a, b, c) => {
                let (f, a, b, c) = (variant(f), v(a), v(b), v(c));
                quote!(::flashopt::ir::semantics::ternary_f32(::flashopt::ir::graph::Func3::#f, #a, #b, #c))
            }
            // Values of the tensor the element is in, numbered in graph order (as the
            // lowering numbers reductions, for a rule with no other).
            Op::Reduce(..) | Op::Matrix(..) | Op::Input(Input::Dim(_)) => {
                let k = Literal::usize_unsuffixed(host_scalars + reductions);
                reductions += 1;
                quote!(scalars[#k])
            }
        };
        debug_assert!(matches!(node.ty, Type::F32 | Type::Bool));
        lines.push(quote!(let #out: f32 = #value;));
    }
    let p_out = v(rule.p_out);
    let state_out = rule.state_out.iter().map(|&h| v(h));
    quote! {
        #(#lines)*
        (#p_out, [#(#state_out),*])
    }
}
