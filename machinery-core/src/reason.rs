//! Why a message was moved to the dead-letter queue, as a value to match on.

use std::fmt;

/// Why a message was moved to the dead-letter queue
/// ([`DeadLetter::reason`](crate::DeadLetter::reason),
/// [`Completion::dead_letter`](crate::engine::Completion::dead_letter)).
///
/// Engines store the [`Display`](fmt::Display) text, which is also the FAILURE error
/// text of a dead-lettered task, and read it back with [`parse`](DeadLetterReason::parse):
/// a text this version did not write (a reason given by hand to
/// [`Broker::dead_letter`](crate::engine::Broker::dead_letter), or by another version) comes
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

/// Why the worker itself failed a task (rather than the task returning an error), read
/// from the FAILURE error text with [`parse`](FailureReason::parse) (for example
/// [`TaskState::error`](crate::TaskState::error), or the message of
/// [`Error::TaskFailed`](crate::Error::TaskFailed)). The worker writes these texts through
/// this type's [`Display`](fmt::Display); any other text, a task's own error among them,
/// is [`Task`](FailureReason::Task).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The task's message was moved to the dead-letter queue; the text is the dead
    /// letter's.
    DeadLettered(DeadLetterReason),
    /// The message was sent for other arguments than this worker's task takes
    /// (producers and workers run different versions). Text: ``argument schema
    /// mismatch: the message was sent for `<sent>` but this worker runs `<runs>`
    /// (producers and workers run different versions of the task)``.
    SchemaMismatch {
        /// The argument schema of the sender.
        sent: String,
        /// The argument schema of the worker.
        runs: String,
    },
    /// No worker runs the task and it asked to be dropped then
    /// (`ignore_when_not_registered`). Text: ``task `<name>` is not registered on the
    /// worker that received it; dropped (ignore_when_not_registered)``.
    Dropped {
        /// The task's name.
        name: String,
    },
    /// A chord member was revoked: the text a revoked member leaves in its chord
    /// ([`ChordOutcome::failure`](crate::engine::ChordOutcome::failure)), from which the
    /// callback's FAILURE says ``chord member #<k> (`<name>`) revoked: <reason>``.
    /// Text: `revoked: <reason>`.
    Revoked {
        /// The member's REVOKED error text (`revoked`, `expired`, or which upstream
        /// task was revoked).
        reason: String,
    },
    /// An earlier step of its chain failed, so it did not run. Text: ``not run: an
    /// earlier step, `<name>` (<uuid>), failed: <error>``.
    UpstreamFailed {
        /// The name of the step that failed.
        name: String,
        /// Its UUID, as text.
        uuid: String,
        /// Its error text.
        error: String,
    },
    /// Any other text: the task's own error, or one this version does not write.
    Task(String),
}

const SCHEMA_PREFIX: &str = "argument schema mismatch: the message was sent for `";
const SCHEMA_MIDDLE: &str = "` but this worker runs `";
const SCHEMA_SUFFIX: &str = "` (producers and workers run different versions of the task)";
const DROPPED_PREFIX: &str = "task `";
const DROPPED_SUFFIX: &str =
    "` is not registered on the worker that received it; dropped (ignore_when_not_registered)";
const REVOKED_PREFIX: &str = "revoked: ";
const UPSTREAM_PREFIX: &str = "not run: an earlier step, `";
const UPSTREAM_MIDDLE: &str = "` (";
const UPSTREAM_ERROR: &str = "), failed: ";

impl FailureReason {
    /// The reason whose text is `text`; [`Task`](FailureReason::Task) when the worker
    /// does not write it.
    pub fn parse(text: &str) -> Self {
        Self::parse_known(text).unwrap_or_else(|| FailureReason::Task(text.to_owned()))
    }

    fn parse_known(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix(SCHEMA_PREFIX)
            && let Some(rest) = rest.strip_suffix(SCHEMA_SUFFIX)
        {
            let (sent, runs) = rest.split_once(SCHEMA_MIDDLE)?;
            return Some(FailureReason::SchemaMismatch {
                sent: sent.to_owned(),
                runs: runs.to_owned(),
            });
        }
        if let Some(name) = text
            .strip_prefix(DROPPED_PREFIX)
            .and_then(|rest| rest.strip_suffix(DROPPED_SUFFIX))
        {
            return Some(FailureReason::Dropped {
                name: name.to_owned(),
            });
        }
        if let Some(reason) = text.strip_prefix(REVOKED_PREFIX) {
            return Some(FailureReason::Revoked {
                reason: reason.to_owned(),
            });
        }
        if let Some(rest) = text.strip_prefix(UPSTREAM_PREFIX) {
            let (name, rest) = rest.split_once(UPSTREAM_MIDDLE)?;
            let (uuid, error) = rest.split_once(UPSTREAM_ERROR)?;
            return Some(FailureReason::UpstreamFailed {
                name: name.to_owned(),
                uuid: uuid.to_owned(),
                error: error.to_owned(),
            });
        }
        match DeadLetterReason::parse_known(text)? {
            reason @ (DeadLetterReason::MaxDeliveries { .. }
            | DeadLetterReason::NotRegistered { .. }) => Some(FailureReason::DeadLettered(reason)),
            _ => None,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::DeadLettered(reason) => reason.fmt(f),
            FailureReason::SchemaMismatch { sent, runs } => {
                write!(
                    f,
                    "{SCHEMA_PREFIX}{sent}{SCHEMA_MIDDLE}{runs}{SCHEMA_SUFFIX}"
                )
            }
            FailureReason::Dropped { name } => write!(f, "{DROPPED_PREFIX}{name}{DROPPED_SUFFIX}"),
            FailureReason::UpstreamFailed { name, uuid, error } => write!(
                f,
                "{UPSTREAM_PREFIX}{name}{UPSTREAM_MIDDLE}{uuid}{UPSTREAM_ERROR}{error}"
            ),
            FailureReason::Revoked { reason } => write!(f, "{REVOKED_PREFIX}{reason}"),
            FailureReason::Task(text) => f.write_str(text),
        }
    }
}

/// Serialized as its text ([`Display`](fmt::Display)), read back with
/// [`parse`](DeadLetterReason::parse).
impl serde::Serialize for DeadLetterReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeadLetterReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        Ok(DeadLetterReason::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_member_text_parses_back() {
        let reason = FailureReason::Revoked {
            reason: "upstream task `a` (x) revoked".into(),
        };
        let text = reason.to_string();
        assert_eq!(text, "revoked: upstream task `a` (x) revoked");
        assert_eq!(FailureReason::parse(&text), reason);
        assert_eq!(
            FailureReason::parse("revoked"),
            FailureReason::Task("revoked".into())
        );
    }

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
    fn failure_texts_are_todays_and_parse_back() {
        let cases = [
            (
                FailureReason::SchemaMismatch {
                    sent: "(i64, i64)".into(),
                    runs: "(String)".into(),
                },
                "argument schema mismatch: the message was sent for `(i64, i64)` but this worker runs `(String)` (producers and workers run different versions of the task)",
            ),
            (
                FailureReason::Dropped { name: "add".into() },
                "task `add` is not registered on the worker that received it; dropped (ignore_when_not_registered)",
            ),
            (
                FailureReason::UpstreamFailed {
                    name: "check".into(),
                    uuid: "0195b7b0-0000-7000-8000-000000000000".into(),
                    error: "boom: (it said) `no`".into(),
                },
                "not run: an earlier step, `check` (0195b7b0-0000-7000-8000-000000000000), failed: boom: (it said) `no`",
            ),
            (
                FailureReason::DeadLettered(DeadLetterReason::MaxDeliveries {
                    deliveries: 3,
                    max: 2,
                }),
                "delivered 3 times (max_deliveries = 2): the workers running it keep dying or losing it",
            ),
            (
                FailureReason::Task("division by zero".into()),
                "division by zero",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(FailureReason::parse(text), reason);
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
