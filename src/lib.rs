pub use flashopt_ir as ir;
