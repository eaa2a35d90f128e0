//! Mistakes in an `optimizer!` definition are compile errors at the offending token,
//! in words a user understands (expected messages in tests/ui/*.stderr, reviewed).

#[test]
fn dsl_mistakes_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
