//! Whole numbers from a YAML number or string, or an environment string.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Visitor};

/// A whole number type a configuration key can hold.
pub trait Whole: Sized {
    /// The largest value.
    const MAX: u64;
    /// Narrows a `u64` no larger than [`Whole::MAX`].
    fn narrow(value: u64) -> Option<Self>;
}

impl Whole for u32 {
    const MAX: u64 = u32::MAX as u64;
    fn narrow(value: u64) -> Option<Self> {
        u32::try_from(value).ok()
    }
}

impl Whole for u64 {
    const MAX: u64 = u64::MAX;
    fn narrow(value: u64) -> Option<Self> {
        Some(value)
    }
}

impl Whole for usize {
    const MAX: u64 = if usize::BITS > 64 {
        u64::MAX
    } else {
        usize::MAX as u64
    };
    fn narrow(value: u64) -> Option<Self> {
        usize::try_from(value).ok()
    }
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T: Whole> WholeVisitor<T> {
    fn from_text<E: de::Error>(text: &str) -> Result<T, E> {
        let trimmed = text.trim();
        let too_large = || {
            E::custom(format!(
                "expected a whole number, at most {}; got `{}`",
                T::MAX,
                text.escape_debug()
            ))
        };
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!(
                "expected a whole number; got `{}`",
                text.escape_debug()
            )));
        }
        let value: u64 = trimmed.parse().map_err(|_| too_large())?;
        T::narrow(value)
            .filter(|_| value <= T::MAX)
            .ok_or_else(too_large)
    }
}

impl<'de, T: Whole> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::from_text(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::from_text(&v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
        Self::from_text(&v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        Self::from_text(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Integers beyond 64 bits come back from the YAML parser as floats.
        if v.fract() == 0.0 && v >= 18_446_744_073_709_551_616.0 {
            return Err(E::custom(format!(
                "expected a whole number, at most {}; got a number beyond 64 bits",
                T::MAX
            )));
        }
        Self::from_text(&format!("{v:?}"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Self::from_text(v)
    }
}

/// Serde helper for whole-number keys of engine sections:
/// `#[serde(deserialize_with = "machinery_core::config::serde_whole::deserialize")]`.
pub mod serde_whole {
    use std::marker::PhantomData;

    use serde::Deserializer;

    use super::{Whole, WholeVisitor};

    /// A whole number from a YAML number or a string (`"64"`, as the environment
    /// gives it), refusing signs, fractions and values above `T::MAX`.
    ///
    /// # Errors
    ///
    /// The deserializer's error, starting with `expected` and quoting the value.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
        d.deserialize_any(WholeVisitor(PhantomData))
    }
}
