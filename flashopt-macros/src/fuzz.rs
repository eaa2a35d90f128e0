//! The front end never panics on what a user may type: the shipped definitions
//! mutated piece by piece and token soup from the grammar's vocabulary are each parsed
//! and, when they parse, expanded; every input ends in tokens or an error at a span.

use crate::{expand, parse};

/// Every shipped definition as `src/optimizers.rs` writes it: the text inside each
/// `optimizer! { .. }`, found by matching braces.
fn shipped() -> Vec<&'static str> {
    let source = include_str!("../../src/optimizers.rs");
    source
        .match_indices("optimizer! {")
        .map(|(at, open)| {
            let body = &source[at + open.len()..];
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed definition");
            &body[..end]
        })
        .collect()
}

// One line per kind of word (rustfmt would put each on its own line).
#[rustfmt::skip]
const VOCABULARY: [&str; 59] = [
    "pub", "extends", "hyper", "state", "let", "if", "else", "in", "f32", "f64", "bool", "i32",
    "signed", "nonneg", "true", "false", "p", "g", "t", "m", "v", "lr", "x",
    "fma", "sqrt", "powi", "sign", "clamp", "float", "tensor_norm", "tensor_mean",
    "row_mean", "col_mean", "per", "row", "column", "orthogonalize", "rows", "cols",
    "=", "-=", "+=", ";", ":", ",", "..", "..=", "+", "-", "*", "/", "==", "<", "(", ")", "{", "}",
    "1.0", "2",
];

/// Parses `text` and expands what parses; panics propagate to the caller.
fn front_end(text: &str) -> bool {
    match syn::parse_str::<parse::OptimizerBlock>(text) {
        Ok(block) => block.items.iter().all(|item| expand::expand(item).is_ok()),
        Err(_) => false,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_definitions_and_token_soup_give_errors_never_panics() {
    let definitions = shipped();
    assert_eq!(
        definitions.len(),
        10,
        "AdamW, Adam, Lion, Sgd with SgdW, Lamb, CautiousAdamW, Adafactor, AdafactorMomentum, AdamMini, Muon"
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut cases, mut expanded) = (0usize, 0usize);
    let mut run = |text: String| {
        let outcome = std::panic::catch_unwind(|| front_end(&text));
        cases += 1;
        match outcome {
            Ok(ok) => expanded += usize::from(ok),
            Err(_) => panic!("the front end panicked on:\n{text}"),
        }
    };
    for definition in definitions {
        assert!(front_end(definition), "the shipped definition expands");
        let tokens: Vec<&str> = definition
            .split_inclusive([' ', '\n', '(', ')', ';', ','])
            .collect();
        // Every piece deleted in turn, then random replacements and insertions.
        for i in 0..tokens.len() {
            let mut t = tokens.clone();
            t.remove(i);
            run(t.concat());
        }
        for _ in 0..400 {
            let mut t: Vec<String> = tokens.iter().map(|s| s.to_string()).collect();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(t.len());
                let word = format!("{} ", VOCABULARY[rng.below(VOCABULARY.len())]);
                match rng.below(2) {
                    0 => t[at] = word,
                    _ => t.insert(at, word),
                }
            }
            run(t.concat());
        }
    }
    // Token soup inside a definition's braces.
    for _ in 0..2000 {
        let body: Vec<&str> = (0..1 + rng.below(40))
            .map(|_| VOCABULARY[rng.below(VOCABULARY.len())])
            .collect();
        run(format!("pub Soup {{ {} }}", body.join(" ")));
    }
    println!("{cases} inputs, {expanded} expanded, the rest errors; none panicked");
    assert!(cases > 5000, "{cases}");
}
