//! What README.md and docs/ state that code can check: the bytes-per-parameter table
//! against the plans, and pages that speak to users (no private folders of the
//! project's machines, no internal issue numbers), and every page with Rust snippets
//! compiled as a crate's doctests.

use flashopt::optimizers::{
    Adafactor, AdafactorMomentum, Adam, AdamMini, AdamW, CautiousAdamW, Lamb, Lion, Muon, Sgd, SgdW,
};
use flashopt::{MasterMode, OptimizerSpec, PlanConfig};

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `| name | held | with a bf16 gradient | fp32 |` as the plan of `S` computes it.
fn row<S: OptimizerSpec>(name: &str) -> String {
    let plan = S::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let held = plan.resident_bytes_per_param();
    let with_grad = held + plan.config.grad.size_bytes() as f64;
    // fp32: an f32 parameter, an f32 gradient and an f32 value per state per element
    // (a state per row or per column is f32 either way, and not per parameter).
    let per_element = plan.states.iter().filter(|s| !s.extent.is_scoped()).count();
    let fp32 = 4 * (2 + per_element);
    format!("| {name} | {held} | {with_grad} | {fp32} |")
}

#[test]
fn the_readme_bytes_table_is_what_the_plans_store() {
    let readme = read("README.md");
    for expected in [
        row::<AdamW>("AdamW"),
        row::<Adam>("Adam"),
        row::<Lion>("Lion"),
        row::<Sgd>("SGD (momentum)"),
        row::<SgdW>("SGDW (momentum)"),
        row::<Lamb>("LAMB"),
        row::<CautiousAdamW>("Cautious AdamW"),
        row::<Adafactor>("Adafactor (+ rows and columns)"),
        row::<AdafactorMomentum>("Adafactor with momentum (+ rows and columns)"),
        row::<AdamMini>("Adam-mini (+ rows)"),
        row::<Muon>("Muon"),
    ] {
        assert!(
            readme.contains(&expected),
            "README.md lacks the row `{expected}`"
        );
    }
}

/// Each page with a ```rust block, and the crate root whose doctests include it.
const COMPILED_PAGES: [(&str, &str); 5] = [
    ("README.md", "src/lib.rs"),
    ("docs/DSL.md", "src/lib.rs"),
    ("docs/CHECKPOINTS.md", "src/lib.rs"),
    ("docs/CANDLE.md", "flashopt-candle/src/lib.rs"),
    ("docs/TRAINING.md", "flashopt-burn/src/lib.rs"),
];

#[test]
fn every_rust_snippet_in_the_pages_is_a_doctest() {
    for page in pages() {
        if !read(&page).lines().any(|l| l.starts_with("```rust")) {
            continue;
        }
        let Some((_, root)) = COMPILED_PAGES.iter().find(|(p, _)| *p == page) else {
            panic!("{page} has Rust snippets but no crate compiles them as doctests")
        };
        let included = format!(
            "include_str!(\"{}{page}\")",
            "../".repeat(root.matches('/').count())
        );
        assert!(
            read(root).contains(&included),
            "{root} does not include {page} as doctests (`{included}`)"
        );
    }
}

/// README.md and every page under docs/.
fn pages() -> Vec<String> {
    let mut pages = vec!["README.md".to_string()];
    for entry in
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap()
    {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    pages.sort();
    pages
}

#[test]
fn pages_name_no_private_folders_or_issue_numbers() {
    let pages = pages();
    assert!(pages.len() > 5, "{pages:?}");
    for page in &pages {
        for (i, line) in read(page).lines().enumerate() {
            assert!(
                !line.contains(".dev/"),
                "{page}:{}: a private folder: {line}",
                i + 1
            );
            let lower = line.to_lowercase();
            let numbered = lower.match_indices("issue").any(|(at, _)| {
                // "issue 14", "issues 14, 15", "issue #14"; not a recorded run's
                // folder name ("...-issue14/").
                let rest = lower[at + 5..]
                    .strip_prefix('s')
                    .unwrap_or(&lower[at + 5..]);
                rest.starts_with([' ', '#'])
                    && rest
                        .trim_start_matches([' ', '#'])
                        .starts_with(|c: char| c.is_ascii_digit())
            });
            assert!(!numbered, "{page}:{}: an issue number: {line}", i + 1);
        }
    }
}
