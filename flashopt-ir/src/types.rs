//! The vocabulary shared by every stage: value types, storage dtypes, master-weight
//! modes and state codecs.

use std::fmt;

/// The type of a value in an update rule.
///
/// Per-element values are `F32` or `Bool`; `Int` exists for the step counter `t` and
/// integer exponents, and only ever lives on the host (the hoisting pass guarantees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    F32,
    Int,
    Bool,
}

impl Type {
    /// "an f32", "an int", "a bool": for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Type::F32 => "an f32",
            Type::Int => "an int",
            Type::Bool => "a bool",
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::F32 => "f32",
            Type::Int => "int",
            Type::Bool => "bool",
        })
    }
}

/// Storage dtype of parameters and gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatDtype {
    Bf16,
    F16,
    F32,
}

impl FloatDtype {
    pub const ALL: [FloatDtype; 3] = [FloatDtype::Bf16, FloatDtype::F16, FloatDtype::F32];

    pub fn size_bytes(self) -> usize {
        match self {
            FloatDtype::Bf16 | FloatDtype::F16 => 2,
            FloatDtype::F32 => 4,
        }
    }

    /// Explicit mantissa bits (bf16 7, f16 10, f32 23).
    pub fn mantissa_bits(self) -> u32 {
        match self {
            FloatDtype::Bf16 => 7,
            FloatDtype::F16 => 10,
            FloatDtype::F32 => 23,
        }
    }

    pub fn exponent_bias(self) -> i32 {
        match self {
            FloatDtype::Bf16 | FloatDtype::F32 => 127,
            FloatDtype::F16 => 15,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FloatDtype::Bf16 => "bf16",
            FloatDtype::F16 => "f16",
            FloatDtype::F32 => "f32",
        }
    }
}

impl fmt::Display for FloatDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the f32 master weight is kept next to a narrow (bf16/f16) parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MasterMode {
    /// The narrow parameter alone is the master weight.
    None,
    /// "24-bit": an int8 correction code per element.
    Int8,
    /// "32-bit": an int16 correction code per element.
    Int16,
}

impl MasterMode {
    pub const ALL: [MasterMode; 3] = [MasterMode::Int8, MasterMode::Int16, MasterMode::None];

    /// flashoptim's `master_weight_bits` spelling: 24, 32 or none.
    pub fn bits_label(self) -> &'static str {
        match self {
            MasterMode::None => "none",
            MasterMode::Int8 => "24",
            MasterMode::Int16 => "32",
        }
    }

    pub fn correction_bytes(self) -> usize {
        match self {
            MasterMode::None => 0,
            MasterMode::Int8 => 1,
            MasterMode::Int16 => 2,
        }
    }

    /// Largest correction code: 127 or 32767.
    pub fn code_max(self) -> Option<f32> {
        match self {
            MasterMode::None => None,
            MasterMode::Int8 => Some(127.0),
            MasterMode::Int16 => Some(32767.0),
        }
    }
}

impl fmt::Display for MasterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.bits_label())
    }
}

/// What an optimizer state holds, which decides the codecs it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// Any sign (momentum).
    Signed,
    /// Never negative (second moments).
    NonNegative,
}

impl StateKind {
    pub fn default_codec(self) -> Codec {
        match self {
            StateKind::Signed => Codec::Int8Softsign,
            StateKind::NonNegative => Codec::Uint8Sqrt,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StateKind::Signed => "signed",
            StateKind::NonNegative => "nonneg",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a state is stored between steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// int8 codes of softsign(x / absmax), one f16 scale per group of 32.
    Int8Softsign,
    /// int8 codes of x / absmax, one f16 scale per group of 32.
    Int8Linear,
    /// uint8 codes of sqrt(x) / max, one f16 scale per group of 32.
    Uint8Sqrt,
    /// Plain bf16 (round to nearest even).
    Bf16,
    /// Plain f32.
    F32,
}

/// How an 8-bit state's encoder chooses between the two codes around a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// The nearest code (`floor(c + 0.5)`), as flashoptim 0.1.4 encodes.
    #[default]
    Nearest,
    /// The upper code with a probability equal to the distance from the lower one:
    /// `floor(c + u)`, `u` in `[0, 1)` a dither of the value and the step
    /// ([`crate::codec::dither`]). Unbiased over steps, so a decaying state decays
    /// where rounding to nearest would leave it on a code that re-encodes to itself.
    Dithered,
}

impl Rounding {
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Nearest => "nearest",
            Rounding::Dithered => "dithered",
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Elements per quantization group (one f16 scale each).
pub const GROUP_SIZE: usize = 32;

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::Int8Softsign,
        Codec::Int8Linear,
        Codec::Uint8Sqrt,
        Codec::Bf16,
        Codec::F32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Codec::Int8Softsign => "int8_softsign",
            Codec::Int8Linear => "int8_linear",
            Codec::Uint8Sqrt => "uint8_sqrt",
            Codec::Bf16 => "bf16",
            Codec::F32 => "f32",
        }
    }

    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether the codec stores codes of a group scale (the 8-bit codecs), the only
    /// ones a [`Rounding`] applies to.
    pub fn quantizes(self) -> bool {
        matches!(
            self,
            Codec::Int8Softsign | Codec::Int8Linear | Codec::Uint8Sqrt
        )
    }

    /// Whether a state of `kind` may be stored with this codec.
    pub fn fits(self, kind: StateKind) -> bool {
        match self {
            Codec::Int8Softsign | Codec::Int8Linear => kind == StateKind::Signed,
            Codec::Uint8Sqrt => kind == StateKind::NonNegative,
            Codec::Bf16 | Codec::F32 => true,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
