//! Why a message was moved to the dead-letter queue, as a value to match on.

use std::fmt;

/// Why a message was moved to the dead-letter queue
/// ([`DeadLetter::reason`](crate::DeadLetter::reason),
/// [`Completion::dead_letter`](crate::Completion::dead_letter)).
///
/// Engines store the [`Display`](fmt::Display) text, which is also the FAILURE error
/// text of a dead-lettered task, and read it back with [`parse`](DeadLetterReason::parse):
/// a text this version did not write (a reason given by hand to
/// [`Broker::dead_letter`](crate::Broker::dead_letter), or by another version) comes
/// back as [`Other`](DeadLetterReason::Other). A reason compares equal to its text.
///
/// ```
/// use machinery_core::DeadLetterReason;
///
/// let reason = DeadLetterReason::MaxDeliveries { deliveries: 11, max: 10 };
/// let text = reason.to_string();
/// assert_eq!(
///     text,
///     "delivered 11 times (max_deliveries = 10): the workers running it keep dying or losing it"
/// );
/// assert_eq!(DeadLetterReason::parse(&text), reason);
/// assert_eq!(reason, text.as_str());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The message is not a task message this version can read.
    /// Text: `undecodable message: <error>`.
    Undecodable {
        /// The decoding error's text.
        error: String,
    },
    /// The message was delivered more than `max_deliveries` times without being settled:
    /// the workers running it keep dying or losing its lease. Text:
    /// `delivered <deliveries> times (max_deliveries = <max>): the workers running it
    /// keep dying or losing it`.
    MaxDeliveries {
        /// How many times it was delivered.
        deliveries: u32,
        /// The configured `max_deliveries`.
        max: u32,
    },
    /// No worker that received the task runs it, after `unregistered_requeues` requeues.
    /// Text: ``task `<name>` is not registered on any worker that received it
    /// (<deliveries> deliveries)``.
    NotRegistered {
        /// The task's name.
        name: String,
        /// How many times it was delivered.
        deliveries: u32,
    },
    /// Any other text.
    Other(String),
}

const UNDECODABLE: &str = "undecodable message: ";
const MAX_PREFIX: &str = "delivered ";
const MAX_MIDDLE: &str = " times (max_deliveries = ";
const MAX_SUFFIX: &str = "): the workers running it keep dying or losing it";
const UNREGISTERED_PREFIX: &str = "task `";
const UNREGISTERED_MIDDLE: &str = "` is not registered on any worker that received it (";
const UNREGISTERED_SUFFIX: &str = " deliveries)";

impl DeadLetterReason {
    /// The reason whose text is `text`; [`Other`](DeadLetterReason::Other) when no
    /// other variant writes it.
    pub fn parse(text: &str) -> Self {
        Self::parse_known(text).unwrap_or_else(|| DeadLetterReason::Other(text.to_owned()))
    }

    fn parse_known(text: &str) -> Option<Self> {
        if let Some(error) = text.strip_prefix(UNDECODABLE) {
            return Some(DeadLetterReason::Undecodable {
                error: error.to_owned(),
            });
        }
        if let Some(rest) = text.strip_prefix(MAX_PREFIX)
            && let Some(rest) = rest.strip_suffix(MAX_SUFFIX)
        {
            let (deliveries, max) = rest.split_once(MAX_MIDDLE)?;
            return Some(DeadLetterReason::MaxDeliveries {
                deliveries: deliveries.parse().ok()?,
                max: max.parse().ok()?,
            });
        }
        let rest = text
            .strip_prefix(UNREGISTERED_PREFIX)?
            .strip_suffix(UNREGISTERED_SUFFIX)?;
        // The name may itself contain the separator; the count never does.
        let (name, deliveries) = rest.rsplit_once(UNREGISTERED_MIDDLE)?;
        Some(DeadLetterReason::NotRegistered {
            name: name.to_owned(),
            deliveries: deliveries.parse().ok()?,
        })
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::Undecodable { error } => write!(f, "{UNDECODABLE}{error}"),
            DeadLetterReason::MaxDeliveries { deliveries, max } => {
                write!(f, "{MAX_PREFIX}{deliveries}{MAX_MIDDLE}{max}{MAX_SUFFIX}")
            }
            DeadLetterReason::NotRegistered { name, deliveries } => write!(
                f,
                "{UNREGISTERED_PREFIX}{name}{UNREGISTERED_MIDDLE}{deliveries}{UNREGISTERED_SUFFIX}"
            ),
            DeadLetterReason::Other(text) => f.write_str(text),
        }
    }
}

impl From<&str> for DeadLetterReason {
    fn from(text: &str) -> Self {
        DeadLetterReason::parse(text)
    }
}

impl From<String> for DeadLetterReason {
    fn from(text: String) -> Self {
        Self::parse_known(&text).unwrap_or(DeadLetterReason::Other(text))
    }
}

impl PartialEq<str> for DeadLetterReason {
    fn eq(&self, other: &str) -> bool {
        match self {
            DeadLetterReason::Other(text) => text == other,
            _ => {
                let text = self.to_string();
                text == other
            }
        }
    }
}

impl PartialEq<&str> for DeadLetterReason {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_todays_and_parse_back() {
        let cases = [
            (
                DeadLetterReason::Undecodable {
                    error: "cannot decode message: unexpected end of file".into(),
                },
                "undecodable message: cannot decode message: unexpected end of file",
            ),
            (
                DeadLetterReason::MaxDeliveries {
                    deliveries: 4,
                    max: 3,
                },
                "delivered 4 times (max_deliveries = 3): the workers running it keep dying or losing it",
            ),
            (
                DeadLetterReason::NotRegistered {
                    name: "tasks::add".into(),
                    deliveries: 4,
                },
                "task `tasks::add` is not registered on any worker that received it (4 deliveries)",
            ),
            (
                DeadLetterReason::Other("too many deliveries".into()),
                "too many deliveries",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(DeadLetterReason::parse(text), reason);
            assert_eq!(DeadLetterReason::from(text.to_owned()), reason);
            assert_eq!(reason, text);
        }
    }

    #[test]
    fn near_misses_are_other() {
        for text in [
            "delivered x times (max_deliveries = 3): the workers running it keep dying or losing it",
            "delivered 4 times: the workers running it keep dying or losing it",
            "task `add` is not registered on any worker that received it (many deliveries)",
            "task `add` is not registered",
            "",
        ] {
            assert_eq!(
                DeadLetterReason::parse(text),
                DeadLetterReason::Other(text.into())
            );
        }
    }
}
