//! Reading script replies and receipts.

use machinery_core::engine::{DeadLetter, Delivery};
use machinery_core::{Error as CoreError, Result as CoreResult};
use redis::Value;

use crate::error::{Error, Result};

/// A delivery's receipt: `<id>/<token>`, its member in the in-flight set.
fn receipt(id: &str, token: &str) -> String {
    format!("{id}/{token}")
}

/// The message id of a delivery's receipt.
pub(super) fn receipt_id(d: &Delivery) -> CoreResult<&str> {
    d.receipt
        .rsplit_once('/')
        .map(|(id, _)| id)
        .ok_or_else(|| CoreError::LeaseLost {
            receipt: d.receipt.clone(),
        })
}

pub(super) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// A fetch script's reply (see `fetch.lua`'s header): the deliveries of `queue`, how
/// long until its next delayed message or lease deadline is due, and whether more
/// messages are ready.
pub(super) struct Fetched {
    pub(super) deliveries: Vec<Delivery>,
    pub(super) next_due: Option<std::time::Duration>,
    pub(super) more: bool,
}

pub(super) fn fetched(queue: &str, reply: &[Value]) -> Result<Fetched> {
    let next_due = reply
        .first()
        .and_then(int)
        .and_then(|n| u64::try_from(n).ok())
        .map(std::time::Duration::from_millis);
    let more = reply.get(1).and_then(int) == Some(1);
    let mut deliveries = Vec::with_capacity((reply.len().saturating_sub(2)) / 4);
    for chunk in reply.get(2..).unwrap_or_default().chunks(4) {
        let [id, token, count, payload] = chunk else {
            return Err(Error::Protocol("fetch returned a partial entry".into()));
        };
        let (Some(id), Some(token), Some(count), Some(payload)) =
            (text(id), text(token), int(count), bytes(payload))
        else {
            return Err(Error::Protocol("fetch returned a malformed entry".into()));
        };
        deliveries.push(Delivery {
            payload,
            queue: queue.to_owned(),
            delivery_count: u32::try_from(count).unwrap_or(u32::MAX),
            receipt: receipt(&id, &token),
        });
    }
    Ok(Fetched {
        deliveries,
        next_due,
        more,
    })
}

/// Parses a dead-letter entry: `<reason length>:<reason><payload>` (`lib.lua`'s
/// `dead_entry`).
pub(super) fn parse_dead(queue: &str, raw: &[u8]) -> DeadLetter {
    let parsed = raw.iter().position(|b| *b == b':').and_then(|colon| {
        let len: usize = std::str::from_utf8(&raw[..colon]).ok()?.parse().ok()?;
        let rest = &raw[colon + 1..];
        (rest.len() >= len).then(|| {
            (
                String::from_utf8_lossy(&rest[..len]).into_owned(),
                rest[len..].to_vec(),
            )
        })
    });
    let (reason, payload) =
        parsed.unwrap_or_else(|| ("(unreadable dead-letter entry)".into(), raw.to_vec()));
    DeadLetter {
        queue: queue.to_owned(),
        reason: reason.into(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_entries_round_trip() {
        let mut raw = b"11:bad payload".to_vec();
        raw.extend_from_slice(&[0, 1, 2, b':']);
        let d = parse_dead("q", &raw);
        assert_eq!(d.reason, "bad payload");
        assert_eq!(d.payload, vec![0, 1, 2, b':']);
        let junk = parse_dead("q", b"nonsense");
        assert_eq!(junk.payload, b"nonsense".to_vec());
    }

    #[test]
    fn a_fetch_reply_reads_as_deliveries() {
        let reply = vec![
            Value::Int(-1),
            Value::Int(1),
            Value::BulkString(b"5:12".to_vec()),
            Value::BulkString(b"7".to_vec()),
            Value::BulkString(b"2".to_vec()),
            Value::BulkString(vec![0xc0]),
        ];
        let f = fetched("q", &reply).unwrap();
        assert!(f.more);
        assert_eq!(f.next_due, None);
        assert_eq!(f.deliveries.len(), 1);
        let d = &f.deliveries[0];
        assert_eq!((d.receipt.as_str(), d.delivery_count), ("5:12/7", 2));
        assert_eq!(receipt_id(d).unwrap(), "5:12");
        assert!(fetched("q", &reply[..4]).is_err());
    }
}
