//! The DSL's grammar, parsed straight into the IR's definition model. Every IR node
//! gets a span id that indexes [`OptimizerInput::spans`].

use flashopt_ir::def::{
    Bound, Expr, ExprKind, Func2, HyperParamDef, Literal, OptimizerDef, Range, Span, StateDef,
    Stmt, UnaryOp, Value,
};
use flashopt_ir::layout::Extent;
use flashopt_ir::{Codec, Rounding, StateKind};
use proc_macro2::Span as SourceSpan;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Token, Visibility};

mod kw {
    syn::custom_keyword!(hyper);
    syn::custom_keyword!(state);
    syn::custom_keyword!(signed);
    syn::custom_keyword!(nonneg);
    syn::custom_keyword!(f32);
    syn::custom_keyword!(i64);
    syn::custom_keyword!(bool);
    syn::custom_keyword!(extends);
    syn::custom_keyword!(per);
    syn::custom_keyword!(row);
    syn::custom_keyword!(column);
}

/// Doc comments and other attributes of one hyper-parameter, for its field.
#[derive(Clone)]
pub struct HyperField {
    pub attrs: Vec<Attribute>,
    pub ident: Ident,
}

pub struct OptimizerInput {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    pub fields: Vec<HyperField>,
    pub def: OptimizerDef,
    spans: Vec<SourceSpan>,
}

impl OptimizerInput {
    /// The source span of an IR span id (the optimizer's name for `Span::NONE`).
    pub fn span(&self, span: Span) -> SourceSpan {
        self.spans
            .get(span.0 as usize)
            .copied()
            .unwrap_or_else(|| self.ident.span())
    }
}

/// Everything inside one `optimizer! { .. }`: one or more definitions, each able to
/// extend one written before it.
pub struct OptimizerBlock {
    pub items: Vec<OptimizerInput>,
}

impl Parse for OptimizerBlock {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut items: Vec<OptimizerInput> = Vec::new();
        loop {
            let item = OptimizerInput::parse_after(input, &items)?;
            items.push(item);
            if input.is_empty() {
                return Ok(OptimizerBlock { items });
            }
        }
    }
}

struct Builder {
    spans: Vec<SourceSpan>,
}

impl Builder {
    fn span(&mut self, s: SourceSpan) -> Span {
        self.spans.push(s);
        Span(self.spans.len() as u32 - 1)
    }
}

/// Split off the `#[flashopt(..)]` attributes (ours) from the rest (kept on the
/// generated item).
fn split_attrs(attrs: Vec<Attribute>) -> (Vec<Attribute>, Vec<Attribute>) {
    attrs
        .into_iter()
        .partition(|a| a.path().is_ident("flashopt"))
}

/// `#[flashopt(min_step = 0.1)]` on the optimizer.
fn optimizer_options(
    attrs: &[Attribute],
    def: &mut OptimizerDef,
    b: &mut Builder,
) -> syn::Result<()> {
    for attr in attrs {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("min_step") {
                let lit: syn::LitFloat = meta.value()?.parse()?;
                let v: f64 = lit.base10_parse()?;
                def.min_step_relative_to_lr = Some((v, b.span(lit.span())));
                Ok(())
            } else {
                Err(meta.error(
                    "unknown flashopt option: the optimizer takes `min_step = <float>` (the smallest step relative to the learning rate)",
                ))
            }
        })?;
    }
    Ok(())
}

/// `#[flashopt(dithered)]` on a state: the rounding of its codes.
fn state_options(attrs: &[Attribute]) -> syn::Result<Rounding> {
    let mut rounding = Rounding::Nearest;
    for attr in attrs {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("dithered") {
                rounding = Rounding::Dithered;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown flashopt option: a state takes `dithered` (round its 8-bit codes with a dither instead of to nearest)",
                ))
            }
        })?;
    }
    Ok(rounding)
}

/// `#[flashopt(learning_rate)]` on a hyper-parameter.
fn hyper_options(
    attrs: &[Attribute],
    ident: &Ident,
    def: &mut OptimizerDef,
    b: &mut Builder,
) -> syn::Result<()> {
    for attr in attrs {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("learning_rate") {
                if def
                    .learning_rate
                    .as_ref()
                    .is_some_and(|(lr, _)| ident != lr)
                {
                    return Err(meta.error("only one hyper-parameter can be the learning rate"));
                }
                def.learning_rate = Some((ident.to_string(), b.span(ident.span())));
                Ok(())
            } else {
                Err(meta.error("unknown flashopt option: a hyper-parameter takes `learning_rate`"))
            }
        })?;
    }
    Ok(())
}

impl OptimizerInput {
    /// One definition; `earlier` are the definitions before it in the same block, which
    /// `extends` may name.
    fn parse_after(input: ParseStream, earlier: &[OptimizerInput]) -> syn::Result<Self> {
        let (options, attrs) = split_attrs(input.call(Attribute::parse_outer)?);
        let vis: Visibility = input.parse()?;
        let _ = input.parse::<Option<Token![struct]>>()?;
        let ident: Ident = input.parse()?;
        let base = match input.parse::<Option<kw::extends>>()? {
            Some(_) => Some(base_named(input.parse()?, earlier)?),
            None => None,
        };
        let body;
        syn::braced!(body in input);

        // An extension starts from its base: its span table (so the base's nodes keep
        // their spans), declarations, options and rule.
        let (mut b, mut def, mut fields) = match base {
            Some(base) => (
                Builder {
                    spans: base.spans.clone(),
                },
                base.def.clone(),
                base.fields.clone(),
            ),
            None => (
                Builder { spans: Vec::new() },
                OptimizerDef::new(""),
                Vec::new(),
            ),
        };
        def.name = ident.to_string().to_lowercase();
        def.span = b.span(ident.span());
        optimizer_options(&options, &mut def, &mut b)?;
        loop {
            let fork = body.fork();
            let field_attrs = fork.call(Attribute::parse_outer)?;
            if fork.peek(kw::hyper) {
                body.call(Attribute::parse_outer)?;
                let (options, field_attrs) = split_attrs(field_attrs);
                let (field, hyper) = parse_hyper(&body, &mut b, field_attrs)?;
                hyper_options(&options, &field.ident, &mut def, &mut b)?;
                // A declaration the base has replaces it in place.
                match def.hyper_params.iter().position(|h| h.name == hyper.name) {
                    Some(i) => {
                        fields[i] = field;
                        def.hyper_params[i] = hyper;
                    }
                    None => {
                        fields.push(field);
                        def.hyper_params.push(hyper);
                    }
                }
            } else if fork.peek(kw::state) {
                body.call(Attribute::parse_outer)?;
                let (options, _docs) = split_attrs(field_attrs);
                let mut state = parse_state(&body, &mut b)?;
                state.rounding = state_options(&options)?;
                match def.states.iter().position(|s| s.name == state.name) {
                    Some(i) => def.states[i] = state,
                    None => def.states.push(state),
                }
            } else {
                break;
            }
        }
        let stmts = syn::Block::parse_within(&body)?;
        // An extension with statements writes its whole rule; without, it keeps the base's.
        if base.is_none() || !stmts.is_empty() {
            def.body.clear();
            for stmt in &stmts {
                def.body.push(statement(stmt, &mut b)?);
            }
        }
        Ok(OptimizerInput {
            attrs,
            vis,
            ident,
            fields,
            def,
            spans: b.spans,
        })
    }
}

/// The definition `extends` names, written earlier in the same block.
fn base_named(name: Ident, earlier: &[OptimizerInput]) -> syn::Result<&OptimizerInput> {
    earlier.iter().find(|d| d.ident == name).ok_or_else(|| {
        syn::Error::new(
            name.span(),
            format!(
                "`extends {name}`: no optimizer `{name}` earlier in this `optimizer!` block (a definition extends one written before it in the same block)"
            ),
        )
    })
}

fn parse_hyper(
    input: ParseStream,
    b: &mut Builder,
    attrs: Vec<Attribute>,
) -> syn::Result<(HyperField, HyperParamDef)> {
    input.parse::<kw::hyper>()?;
    let ident: Ident = input.parse()?;
    input.parse::<Token![:]>()?;
    let lookahead = input.lookahead1();
    let ty = if lookahead.peek(kw::f32) {
        input.parse::<kw::f32>()?;
        flashopt_ir::Type::F32
    } else if lookahead.peek(kw::i64) {
        input.parse::<kw::i64>()?;
        flashopt_ir::Type::Int
    } else if lookahead.peek(kw::bool) {
        input.parse::<kw::bool>()?;
        flashopt_ir::Type::Bool
    } else {
        return Err(lookahead.error());
    };
    input.parse::<Token![=]>()?;
    let (default, follows) = if input.peek(Ident) && !input.peek(syn::LitBool) {
        let source: Ident = input.parse()?;
        (Value::Float(f64::NAN), Some(source))
    } else {
        let (v, span) = number_or_bool(input)?;
        let v = match (ty, v) {
            (flashopt_ir::Type::F32, Value::Int(i)) => Value::Float(i as f64),
            (t, v) if v.ty() != t => {
                return Err(syn::Error::new(
                    span,
                    format!(
                        "hyper-parameter `{ident}` is declared {t} but its default is {}",
                        v.ty().with_article()
                    ),
                ));
            }
            (_, v) => v,
        };
        (v, None)
    };
    let range = if input.peek(Token![in]) {
        input.parse::<Token![in]>()?;
        parse_range(input)?
    } else {
        Range::ANY
    };
    input.parse::<Token![;]>()?;
    if follows.is_some() && ty != flashopt_ir::Type::F32 {
        return Err(syn::Error::new(
            ident.span(),
            "only f32 hyper-parameters can follow another",
        ));
    }
    let hyper = HyperParamDef {
        name: ident.to_string(),
        default,
        range,
        follows: follows.as_ref().map(Ident::to_string),
        span: b.span(ident.span()),
    };
    Ok((HyperField { attrs, ident }, hyper))
}

/// `-1.5`, `3`, `1e-8`, `true`.
fn number_or_bool(input: ParseStream) -> syn::Result<(Value, SourceSpan)> {
    if input.peek(syn::LitBool) {
        let lit: syn::LitBool = input.parse()?;
        return Ok((Value::Bool(lit.value), lit.span()));
    }
    let negative = input.parse::<Option<Token![-]>>()?.is_some();
    let sign = if negative { -1.0 } else { 1.0 };
    let lookahead = input.lookahead1();
    if lookahead.peek(syn::LitFloat) {
        let lit: syn::LitFloat = input.parse()?;
        Ok((Value::Float(sign * lit.base10_parse::<f64>()?), lit.span()))
    } else if lookahead.peek(syn::LitInt) {
        let lit: syn::LitInt = input.parse()?;
        let v = lit.base10_parse::<i64>()?;
        Ok((Value::Int(if negative { -v } else { v }), lit.span()))
    } else {
        Err(lookahead.error())
    }
}

/// Rust range syntax: `a..`, `a..b`, `a..=b`, `..=b`, `..`. Lower bounds are inclusive.
fn parse_range(input: ParseStream) -> syn::Result<Range> {
    let number = |input: ParseStream| -> syn::Result<f64> {
        let (v, span) = number_or_bool(input)?;
        v.as_f64()
            .ok_or_else(|| syn::Error::new(span, "a range bound is a number"))
    };
    let lo = if input.peek(Token![..]) || input.peek(Token![..=]) {
        Bound::Unbounded
    } else {
        Bound::Inclusive(number(input)?)
    };
    let inclusive = if input.peek(Token![..=]) {
        input.parse::<Token![..=]>()?;
        true
    } else {
        input.parse::<Token![..]>()?;
        false
    };
    let hi = if input.peek(Token![;]) {
        if inclusive {
            return Err(input.error("`..=` needs an upper bound"));
        }
        Bound::Unbounded
    } else if inclusive {
        Bound::Inclusive(number(input)?)
    } else {
        Bound::Exclusive(number(input)?)
    };
    Ok(Range { lo, hi })
}

fn parse_state(input: ParseStream, b: &mut Builder) -> syn::Result<StateDef> {
    input.parse::<kw::state>()?;
    let ident: Ident = input.parse()?;
    input.parse::<Token![:]>()?;
    let lookahead = input.lookahead1();
    let kind = if lookahead.peek(kw::signed) {
        input.parse::<kw::signed>()?;
        StateKind::Signed
    } else if lookahead.peek(kw::nonneg) {
        input.parse::<kw::nonneg>()?;
        StateKind::NonNegative
    } else {
        return Err(lookahead.error());
    };
    let codec = if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        let name: Ident = input.parse()?;
        let known = Codec::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ");
        Some(Codec::from_name(&name.to_string()).ok_or_else(|| {
            syn::Error::new(
                name.span(),
                format!("unknown codec `{name}`; the codecs are: {known}"),
            )
        })?)
    } else {
        None
    };
    let extent = if input.peek(kw::per) {
        input.parse::<kw::per>()?;
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::row) {
            input.parse::<kw::row>()?;
            Extent::Row
        } else if lookahead.peek(kw::column) {
            input.parse::<kw::column>()?;
            Extent::Column
        } else {
            return Err(lookahead.error());
        }
    } else {
        Extent::Element
    };
    input.parse::<Token![;]>()?;
    Ok(StateDef {
        name: ident.to_string(),
        kind,
        codec,
        rounding: Rounding::Nearest,
        extent,
        span: b.span(ident.span()),
    })
}

fn statement(stmt: &syn::Stmt, b: &mut Builder) -> syn::Result<Stmt> {
    let unsupported = |s: &dyn Spanned| {
        syn::Error::new(
            s.span(),
            "expected `let name = expr;` or an assignment `target = expr;` (or `+=`, `-=`, `*=`, `/=`)",
        )
    };
    match stmt {
        syn::Stmt::Local(local) => {
            let syn::Pat::Ident(pat) = &local.pat else {
                return Err(syn::Error::new(
                    local.pat.span(),
                    "bind a plain name: `let name = expr;`",
                ));
            };
            let Some(init) = &local.init else {
                return Err(syn::Error::new(
                    local.span(),
                    "a binding needs a value: `let name = expr;`",
                ));
            };
            if init.diverge.is_some() {
                return Err(unsupported(local));
            }
            Ok(Stmt::Let {
                name: pat.ident.to_string(),
                value: expr(&init.expr, b)?,
                span: b.span(pat.ident.span()),
            })
        }
        syn::Stmt::Expr(e, Some(_)) => {
            let (target, value) = match e {
                syn::Expr::Assign(a) => (&*a.left, expr(&a.right, b)?),
                syn::Expr::Binary(bin) => {
                    let op = match bin.op {
                        syn::BinOp::AddAssign(_) => Func2::Add,
                        syn::BinOp::SubAssign(_) => Func2::Sub,
                        syn::BinOp::MulAssign(_) => Func2::Mul,
                        syn::BinOp::DivAssign(_) => Func2::Div,
                        _ => return Err(unsupported(e)),
                    };
                    let lhs = expr(&bin.left, b)?;
                    let rhs = expr(&bin.right, b)?;
                    let span = b.span(bin.op.span());
                    (
                        &*bin.left,
                        Expr::new(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span),
                    )
                }
                _ => return Err(unsupported(e)),
            };
            let syn::Expr::Path(path) = target else {
                return Err(syn::Error::new(
                    target.span(),
                    "assign to a plain name: `p`, or a state",
                ));
            };
            let ident = path.path.get_ident().ok_or_else(|| {
                syn::Error::new(path.span(), "assign to a plain name: `p`, or a state")
            })?;
            Ok(Stmt::Assign {
                target: ident.to_string(),
                value,
                span: b.span(ident.span()),
            })
        }
        other => Err(unsupported(other)),
    }
}

fn expr(e: &syn::Expr, b: &mut Builder) -> syn::Result<Expr> {
    let kind = match e {
        syn::Expr::Lit(lit) => ExprKind::Lit(match &lit.lit {
            syn::Lit::Float(f) => Literal::Float(f.base10_parse()?),
            syn::Lit::Int(i) => Literal::Int(i.base10_parse()?),
            syn::Lit::Bool(v) => Literal::Bool(v.value),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "literals are numbers or `true`/`false`",
                ));
            }
        }),
        syn::Expr::Path(path) => match path.path.get_ident() {
            Some(ident) => ExprKind::Name(ident.to_string()),
            None => return Err(syn::Error::new(path.span(), "names are plain identifiers")),
        },
        syn::Expr::Paren(inner) => return expr(&inner.expr, b),
        syn::Expr::Group(inner) => return expr(&inner.expr, b),
        syn::Expr::Unary(u) => {
            let op = match u.op {
                syn::UnOp::Neg(_) => UnaryOp::Neg,
                syn::UnOp::Not(_) => UnaryOp::Not,
                _ => return Err(syn::Error::new(u.span(), "unsupported operator: `*`")),
            };
            ExprKind::Unary(op, Box::new(expr(&u.expr, b)?))
        }
        syn::Expr::Binary(bin) => {
            let op = match bin.op {
                syn::BinOp::Add(_) => Func2::Add,
                syn::BinOp::Sub(_) => Func2::Sub,
                syn::BinOp::Mul(_) => Func2::Mul,
                syn::BinOp::Div(_) => Func2::Div,
                syn::BinOp::Lt(_) => Func2::Lt,
                syn::BinOp::Le(_) => Func2::Le,
                syn::BinOp::Gt(_) => Func2::Gt,
                syn::BinOp::Ge(_) => Func2::Ge,
                syn::BinOp::Eq(_) => Func2::Eq,
                syn::BinOp::Ne(_) => Func2::Ne,
                syn::BinOp::And(_) => Func2::And,
                syn::BinOp::Or(_) => Func2::Or,
                _ => {
                    return Err(syn::Error::new(
                        bin.op.span(),
                        "unsupported operator; use + - * / comparisons && ||, and built-in functions",
                    ));
                }
            };
            let (lhs, rhs) = (expr(&bin.left, b)?, expr(&bin.right, b)?);
            // Errors point at the operator: a multi-token span is its first token.
            let span = b.span(bin.op.span());
            return Ok(Expr::new(
                ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            ));
        }
        syn::Expr::Call(call) => {
            let syn::Expr::Path(func) = &*call.func else {
                return Err(syn::Error::new(
                    call.func.span(),
                    "call a built-in function by name",
                ));
            };
            let name = func
                .path
                .get_ident()
                .ok_or_else(|| syn::Error::new(func.span(), "call a built-in function by name"))?;
            let args = call
                .args
                .iter()
                .map(|a| expr(a, b))
                .collect::<syn::Result<_>>()?;
            let span = b.span(name.span());
            return Ok(Expr::new(ExprKind::Call(name.to_string(), args), span));
        }
        syn::Expr::MethodCall(m) => {
            // `x.sqrt()` is `sqrt(x)`, `a.min(b)` is `min(a, b)`.
            let mut args = vec![expr(&m.receiver, b)?];
            for a in &m.args {
                args.push(expr(a, b)?);
            }
            let span = b.span(m.method.span());
            return Ok(Expr::new(ExprKind::Call(m.method.to_string(), args), span));
        }
        syn::Expr::If(i) => {
            let Some((_, else_branch)) = &i.else_branch else {
                return Err(syn::Error::new(
                    i.span(),
                    "`if` needs an `else`: it selects a value",
                ));
            };
            let cond = expr(&i.cond, b)?;
            let then = block_value(&i.then_branch, b)?;
            let otherwise = match &**else_branch {
                syn::Expr::Block(block) => block_value(&block.block, b)?,
                other => expr(other, b)?,
            };
            let span = b.span(i.if_token.span);
            return Ok(Expr::new(
                ExprKind::Call("select".into(), vec![cond, then, otherwise]),
                span,
            ));
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                "unsupported expression; a rule uses names, numbers, operators, function and method calls, and `if .. else ..`",
            ));
        }
    };
    let span = b.span(e.span());
    Ok(Expr::new(kind, span))
}

/// The value of `{ expr }`.
fn block_value(block: &syn::Block, b: &mut Builder) -> syn::Result<Expr> {
    match block.stmts.as_slice() {
        [syn::Stmt::Expr(e, None)] => expr(e, b),
        _ => Err(syn::Error::new(
            block.span(),
            "a branch of `if` is one expression: `{ value }`",
        )),
    }
}
