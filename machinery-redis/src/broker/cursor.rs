//! Page cursors: opaque text that says where the next page of a listing starts.
//!
//! `<list>.<queue hash>.<place>`: the list's letter, the FNV-1a hash of the queue's
//! name (8 hex digits; a cursor of another listing is refused rather than misread),
//! and the place. For a sorted set the place is the last member listed and its score,
//! `<score>.<member in hex>` (keyset pagination: the next page starts after it
//! whatever was consumed meanwhile); for the dead-letter list it is
//! `<index>.<hash of the last entry>` (see `tasks` in `inspect.rs`).

use machinery_core::inspect::TaskList;
use machinery_core::{Error as CoreError, Result as CoreResult};

/// Where a page starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cursor {
    /// After `member` of `score` (as Redis formatted it).
    After { score: String, member: Vec<u8> },
    /// At `index` of the dead-letter list, whose entry before it hashed to `last`.
    At { index: u64, last: u64 },
}

fn letter(list: TaskList) -> char {
    match list {
        TaskList::Pending => 'p',
        TaskList::Delayed => 'd',
        TaskList::InFlight => 'i',
        TaskList::Dead => 'x',
        TaskList::Failed => 'f',
    }
}

/// FNV-1a, 64 bits.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn queue_tag(queue: &str) -> String {
    format!("{:08x}", fnv1a(queue.as_bytes()) & 0xffff_ffff)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The text of `cursor` for `list` of `queue`.
pub(super) fn encode(list: TaskList, queue: &str, cursor: &Cursor) -> String {
    let place = match cursor {
        Cursor::After { score, member } => format!("{score}.{}", hex(member)),
        Cursor::At { index, last } => format!("{index}.{last:016x}"),
    };
    format!("{}.{}.{place}", letter(list), queue_tag(queue))
}

/// Reads a cursor made by [`encode`] for `list` of `queue`.
///
/// # Errors
/// [`CoreError::InvalidCursor`] for anything else.
pub(super) fn decode(list: TaskList, queue: &str, text: &str) -> CoreResult<Cursor> {
    parse(list, queue, text).ok_or_else(|| CoreError::InvalidCursor {
        cursor: text.to_owned(),
    })
}

fn parse(list: TaskList, queue: &str, text: &str) -> Option<Cursor> {
    let mut parts = text.split('.');
    let (l, tag) = (parts.next()?, parts.next()?);
    let l = l.strip_prefix(letter(list))?;
    if !l.is_empty() || tag != queue_tag(queue) {
        return None;
    }
    let rest: Vec<&str> = parts.collect();
    match list {
        TaskList::Dead => {
            let [index, last] = rest.as_slice() else {
                return None;
            };
            // Redis takes list indexes as signed 64-bit integers.
            let index: u64 = index.parse().ok()?;
            i64::try_from(index).ok()?;
            Some(Cursor::At {
                index,
                last: u64::from_str_radix(last, 16).ok()?,
            })
        }
        _ => {
            // A score may have a decimal point of its own ("1.5", "1e+20").
            let (member, score) = rest.split_last()?;
            let score = score.join(".");
            let valid = score
                .parse::<f64>()
                .is_ok_and(|s| !s.is_nan() && !score.is_empty())
                && score
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
            valid.then_some(())?;
            Some(Cursor::After {
                score,
                member: unhex(member)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let after = Cursor::After {
            score: "90000000000012".into(),
            member: b"0:12/7".to_vec(),
        };
        let text = encode(TaskList::InFlight, "q", &after);
        assert_eq!(decode(TaskList::InFlight, "q", &text).unwrap(), after);
        let fractional = Cursor::After {
            score: "1.5e+20".into(),
            member: Vec::new(),
        };
        let text = encode(TaskList::Failed, "q", &fractional);
        assert_eq!(decode(TaskList::Failed, "q", &text).unwrap(), fractional);
        let at = Cursor::At {
            index: 200,
            last: u64::MAX,
        };
        let text = encode(TaskList::Dead, "q", &at);
        assert_eq!(decode(TaskList::Dead, "q", &text).unwrap(), at);
    }

    #[test]
    fn foreign_or_damaged_cursors_are_refused() {
        let text = encode(
            TaskList::Pending,
            "q",
            &Cursor::After {
                score: "1".into(),
                member: b"0:1".to_vec(),
            },
        );
        for (list, queue, bad) in [
            (TaskList::Delayed, "q", text.as_str()),
            (TaskList::Pending, "other", text.as_str()),
            (TaskList::Pending, "q", ""),
            (TaskList::Pending, "q", "garbage"),
            (TaskList::Pending, "q", &text[..text.len() - 1]),
            (TaskList::Pending, "q", &text.replace(".1.", ".nan.")),
            (TaskList::Pending, "q", &text.replace(".1.", ".1 .")),
            (TaskList::Dead, "q", "x.00000000.1"),
            (
                TaskList::Dead,
                "q",
                &format!("x.{}.{}.0", queue_tag("q"), u64::MAX),
            ),
        ] {
            let e = decode(list, queue, bad).unwrap_err();
            assert!(
                matches!(e, CoreError::InvalidCursor { ref cursor } if cursor == bad),
                "{bad}: {e}"
            );
        }
    }
}
