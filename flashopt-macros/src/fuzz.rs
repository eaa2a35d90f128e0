//! The front end never panics on what a user may type: definitions mutated token by
//! token and token soup from the grammar's vocabulary are each parsed and, when they
//! parse, expanded; every input ends in tokens or an error at a span.

use crate::{expand, parse};

/// A definition using most of the grammar (AdamW as shipped, with a bound and an `if`).
const VALID: &str = r#"
    /// AdamW.
    #[flashopt(min_step = 0.1)]
    pub AdamW {
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper b1: f32 = 0.9 in 0.0..1.0;
        hyper b2: f32 = 0.999 in 0.0..1.0;
        hyper eps: f32 = 1e-8 in 0.0..;
        hyper weight_decay: f32 = 1e-2 in 0.0..;
        hyper decouple_lr: bool = false;
        hyper initial_lr: f32 = lr in 0.0..;
        hyper bound: bool = true;
        state m: signed;
        state v: nonneg;

        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        let moment = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let root = (v / (1.0 - powi(b2, t))).sqrt();
        let limit = (1.0 - b1) * float(t) * root;
        m = if bound { clamp(moment, -limit, limit) } else { moment };
        p = fma(p, 1.0 - decay, -(lr * (m / bias1) / (root + eps)));
    }
"#;

const VOCABULARY: [&str; 48] = [
    "pub", "hyper", "state", "let", "if", "else", "in", "f32", "f64", "bool", "i32", "signed",
    "nonneg", "true", "false", "p", "g", "t", "m", "v", "lr", "x", "fma", "sqrt", "powi", "sign",
    "clamp", "float", "=", "-=", "+=", ";", ":", ",", "..", "..=", "+", "-", "*", "/", "==", "<",
    "(", ")", "{", "}", "1.0", "2",
];

/// Parses `text` and expands what parses; panics propagate to the caller.
fn front_end(text: &str) -> bool {
    match syn::parse_str::<parse::OptimizerInput>(text) {
        Ok(input) => expand::expand(&input).is_ok(),
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
    assert!(front_end(VALID), "the valid definition expands");
    let tokens: Vec<String> = VALID
        .split_inclusive([' ', '\n', '(', ')', ';', ','])
        .map(str::to_string)
        .collect();
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
    // Every piece deleted in turn, then random replacements and insertions.
    for i in 0..tokens.len() {
        let mut t = tokens.clone();
        t.remove(i);
        run(t.concat());
    }
    for _ in 0..2000 {
        let mut t = tokens.clone();
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
    // Token soup inside a definition's braces.
    for _ in 0..2000 {
        let body: Vec<&str> = (0..1 + rng.below(40))
            .map(|_| VOCABULARY[rng.below(VOCABULARY.len())])
            .collect();
        run(format!("pub Soup {{ {} }}", body.join(" ")));
    }
    println!("{cases} inputs, {expanded} expanded, the rest errors; none panicked");
    assert!(cases > 4000, "{cases}");
}
