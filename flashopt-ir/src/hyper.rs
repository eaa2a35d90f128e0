//! Hyper-parameter values at run time, checked against their declarations.

use crate::def::{HyperParamDef, Range, Value};
use crate::types::Type;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HyperError {
    #[error("unknown hyper-parameter `{name}`; this optimizer has: {known}")]
    Unknown { name: String, known: String },
    #[error("hyper-parameter `{name}` is {expected}, got {value} ({found})")]
    WrongType {
        name: String,
        expected: Type,
        found: Type,
        value: Value,
    },
    #[error("hyper-parameter `{name}` = {value} is outside its range {range}")]
    OutOfRange {
        name: String,
        value: Value,
        range: Range,
    },
    #[error(
        "these hyper-parameter values were made for another optimizer (expected {expected}, have {found})"
    )]
    Mismatch { expected: String, found: String },
}

/// Current values of an optimizer's hyper-parameters, in declaration order.
#[derive(Clone, Debug, PartialEq)]
pub struct HyperValues {
    defs: Vec<HyperParamDef>,
    values: Vec<Value>,
}

impl HyperValues {
    /// Every hyper-parameter at its default.
    pub fn defaults(defs: &[HyperParamDef]) -> HyperValues {
        let mut values: Vec<Value> = Vec::with_capacity(defs.len());
        for d in defs {
            let followed = d
                .follows
                .as_ref()
                .and_then(|f| defs.iter().position(|x| &x.name == f));
            values.push(match followed {
                Some(i) if i < values.len() => values[i],
                _ => d.default,
            });
        }
        HyperValues {
            defs: defs.to_vec(),
            values,
        }
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        self.defs
            .iter()
            .position(|d| d.name == name)
            .map(|i| self.values[i])
    }

    /// Set one value; an int is accepted for an f32 hyper-parameter. Nothing changes
    /// on error.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> Result<&mut Self, HyperError> {
        let value = value.into();
        let Some(i) = self.defs.iter().position(|d| d.name == name) else {
            return Err(HyperError::Unknown {
                name: name.to_string(),
                known: self.names().join(", "),
            });
        };
        let def = &self.defs[i];
        let value = match (def.default.ty(), value) {
            (Type::F32, Value::Int(v)) => Value::Float(v as f64),
            (expected, v) if v.ty() != expected => {
                return Err(HyperError::WrongType {
                    name: name.to_string(),
                    expected,
                    found: v.ty(),
                    value: v,
                });
            }
            (_, v) => v,
        };
        if let Some(x) = value.as_f64()
            && !def.range.contains(x)
        {
            return Err(HyperError::OutOfRange {
                name: name.to_string(),
                value,
                range: def.range,
            });
        }
        self.values[i] = value;
        Ok(self)
    }

    fn names(&self) -> Vec<&str> {
        self.defs.iter().map(|d| d.name.as_str()).collect()
    }

    /// Check these values belong to an optimizer declaring `defs`.
    pub fn check_for(&self, defs: &[HyperParamDef]) -> Result<(), HyperError> {
        let same = defs.len() == self.defs.len()
            && defs
                .iter()
                .zip(&self.defs)
                .all(|(a, b)| a.name == b.name && a.default.ty() == b.default.ty());
        if same {
            Ok(())
        } else {
            Err(HyperError::Mismatch {
                expected: defs
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                found: self.names().join(", "),
            })
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(f64::from(v))
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::OptimizerDef;

    #[test]
    fn set_checks_name_type_and_range_and_keeps_old_value_on_error() {
        let mut def = OptimizerDef::new("t");
        def.hyper("lr", 1e-3, Range::at_least(0.0));
        def.hyper_value("nesterov", Value::Bool(false), Range::ANY);
        let mut hv = HyperValues::defaults(&def.hyper_params);
        let err = hv.set("lr", -1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hyper-parameter `lr` = -1.0 is outside its range [0.0, inf)"
        );
        assert_eq!(hv.get("lr"), Some(Value::Float(1e-3)));
        assert!(matches!(
            hv.set("lr", f64::NAN),
            Err(HyperError::OutOfRange { .. })
        ));
        assert!(matches!(
            hv.set("nesterov", 1.0),
            Err(HyperError::WrongType { .. })
        ));
        assert!(
            hv.set("lr0", 1.0)
                .unwrap_err()
                .to_string()
                .contains("this optimizer has: lr, nesterov")
        );
        hv.set("lr", 2).unwrap().set("nesterov", true).unwrap();
        assert_eq!(hv.values(), &[Value::Float(2.0), Value::Bool(true)]);
    }
}
