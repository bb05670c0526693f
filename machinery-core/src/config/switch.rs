//! On/off keys from a YAML boolean or string, or an environment string.

use std::fmt;

use serde::de::{self, Visitor};

/// What is accepted, for error messages.
const ACCEPTED: &str = "`true` or `false` (also `on`/`off`, `yes`/`no`, `1`/`0`)";

/// Reads the words an operator may write for on and off, in any case.
fn from_text(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

struct SwitchVisitor;

impl<'de> Visitor<'de> for SwitchVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ACCEPTED)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.visit_str(&format!("{v:?}"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        from_text(v)
            .ok_or_else(|| E::custom(format!("expected {ACCEPTED}; got `{}`", v.escape_debug())))
    }
}

/// Serde helper for on/off keys, of the core configuration and of engine sections:
/// `#[serde(deserialize_with = "machinery_core::config::serde_switch::deserialize")]`.
pub mod serde_switch {
    use serde::Deserializer;

    use super::SwitchVisitor;

    /// A YAML boolean, or one of `true`, `false`, `on`, `off`, `yes`, `no`, `1`, `0`
    /// in any case (as the environment gives it).
    ///
    /// # Errors
    ///
    /// The deserializer's error, starting with `expected` and quoting the value.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        d.deserialize_any(SwitchVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::from_text;

    #[test]
    fn words_for_on_and_off() {
        for on in ["true", "TRUE", "On", "yes", "1", " true "] {
            assert_eq!(from_text(on), Some(true), "{on}");
        }
        for off in ["false", "Off", "NO", "0"] {
            assert_eq!(from_text(off), Some(false), "{off}");
        }
        for neither in ["", "2", "enabled", "t"] {
            assert_eq!(from_text(neither), None, "{neither}");
        }
    }
}
