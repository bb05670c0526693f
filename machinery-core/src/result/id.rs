//! Saved handles: the text form of result handles, for another process to restore.
//!
//! An id is `<kind>.v1.<payload>`: the kind of handle (`task`, `chain`, `group`,
//! `chord`), the format's version, and the handle's parts as a positional MessagePack
//! array in unpadded base64url (URL- and file-name-safe). It holds everything a handle
//! needs, so restoring one reads nothing from the engine.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::codec;
use crate::error::{Error, Result};

const VERSION: &str = "v1";

/// The id of a handle of `kind` (`"task"`, `"group"`, …) whose parts are `value`.
///
/// The parts are UUIDs, strings and integers, which always encode; were one not to, the
/// id would carry an empty payload, which [`decode`] refuses with [`Error::Decode`].
pub(crate) fn encode<T: Serialize>(kind: &'static str, value: &T) -> String {
    let bytes = codec::to_vec(value, "result handle id").unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a result handle id");
        Vec::new()
    });
    format!("{kind}.{VERSION}.{}", base64url(&bytes))
}

/// The parts of a handle of `kind` from its id.
///
/// # Errors
/// [`Error::Decode`] naming what is wrong: another kind of handle, another format
/// version, not base64url, parts that do not decode.
pub(crate) fn decode<T: DeserializeOwned>(kind: &'static str, id: &str) -> Result<T> {
    let bad = |reason: String| Error::Decode {
        what: "result handle id",
        reason,
    };
    let mut parts = id.splitn(3, '.');
    let (Some(found), Some(version), Some(payload)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "`{}` is not a saved handle (expected `{kind}.{VERSION}.<payload>`)",
            shorten(id)
        )));
    };
    if found != kind {
        return Err(bad(format!(
            "the id is of a `{}` handle, not of a `{kind}` handle",
            shorten(found)
        )));
    }
    if version != VERSION {
        return Err(bad(format!(
            "the id is in format `{}`; this version reads `{VERSION}`",
            shorten(version)
        )));
    }
    let bytes =
        from_base64url(payload).ok_or_else(|| bad("the payload is not base64url".into()))?;
    codec::from_slice(&bytes, "result handle id")
}

/// One task's handle: its UUID, name and queue (empty when not known).
pub(crate) type TaskRef = (Uuid, String, String);

/// Many task handles, their names and queues listed once: most members of a group share
/// them.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct TaskRefs {
    names: Vec<String>,
    queues: Vec<String>,
    tasks: Vec<(Uuid, u32, u32)>,
}

impl TaskRefs {
    /// Adds one task.
    pub(crate) fn push(&mut self, uuid: Uuid, name: &str, queue: &str) {
        let name = index_of(&mut self.names, name);
        let queue = index_of(&mut self.queues, queue);
        self.tasks.push((uuid, name, queue));
    }

    /// The tasks, in the order pushed.
    ///
    /// # Errors
    /// [`Error::Decode`] when a task names a name or queue that is not listed.
    pub(crate) fn into_refs(self) -> Result<Vec<TaskRef>> {
        let TaskRefs {
            names,
            queues,
            tasks,
        } = self;
        tasks
            .into_iter()
            .map(|(uuid, name, queue)| {
                let name = names.get(name as usize);
                let queue = queues.get(queue as usize);
                match (name, queue) {
                    (Some(n), Some(q)) => Ok((uuid, n.clone(), q.clone())),
                    _ => Err(Error::Decode {
                        what: "result handle id",
                        reason: format!("task {uuid} refers to a name or queue not listed"),
                    }),
                }
            })
            .collect()
    }
}

fn index_of(list: &mut Vec<String>, value: &str) -> u32 {
    // Groups use a handful of names and queues: a linear search is the fastest here.
    let i = match list.iter().position(|v| v == value) {
        Some(i) => i,
        None => {
            list.push(value.to_owned());
            list.len() - 1
        }
    };
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// At most 40 characters of `text`, for error messages about untrusted input.
fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(40).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes gives k + 1 characters (no padding).
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn from_base64url(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            // One character holds six bits: not a whole byte.
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for len in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let text = base64url(&bytes);
            assert!(
                text.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
            assert_eq!(from_base64url(&text), Some(bytes));
        }
        assert_eq!(base64url(b"Man"), "TWFu");
        assert_eq!(base64url(b"Ma"), "TWE");
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(from_base64url("TWFu!"), None);
        assert_eq!(from_base64url("TWFuT"), None);
    }

    #[test]
    fn ids_name_their_kind_and_version() {
        let refs = (Uuid::nil(), "add".to_owned(), "q".to_owned());
        let id = encode("task", &refs);
        assert!(id.starts_with("task.v1."), "{id}");
        let back: TaskRef = decode("task", &id).unwrap();
        assert_eq!(back, refs);
        let err = decode::<TaskRef>("group", &id).unwrap_err().to_string();
        assert!(
            err.contains("of a `task` handle, not of a `group`"),
            "{err}"
        );
        let err = decode::<TaskRef>("task", "task.v9.AAAA")
            .unwrap_err()
            .to_string();
        assert!(err.contains("format `v9`"), "{err}");
        for bad in ["", "nonsense", "task.v1.!!", "task.v1.AAAA"] {
            assert!(
                matches!(decode::<TaskRef>("task", bad), Err(Error::Decode { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn task_refs_list_names_and_queues_once() {
        let mut refs = TaskRefs::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        refs.push(a, "add", "q1");
        refs.push(b, "add", "q2");
        refs.push(c, "mul", "q1");
        assert_eq!(refs.names.len(), 2);
        assert_eq!(refs.queues.len(), 2);
        let id = encode("group", &refs);
        let back: TaskRefs = decode("group", &id).unwrap();
        assert_eq!(
            back.into_refs().unwrap(),
            vec![
                (a, "add".to_owned(), "q1".to_owned()),
                (b, "add".to_owned(), "q2".to_owned()),
                (c, "mul".to_owned(), "q1".to_owned()),
            ]
        );
        let broken = TaskRefs {
            names: vec![],
            queues: vec![],
            tasks: vec![(a, 0, 0)],
        };
        assert!(matches!(broken.into_refs(), Err(Error::Decode { .. })));
    }
}
