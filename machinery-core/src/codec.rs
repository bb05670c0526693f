//! MessagePack encoding of messages, arguments and results.
//!
//! The signature envelope is a version byte followed by a MessagePack map keyed by field
//! name, so fields can be added without breaking older readers. Task arguments are a
//! positional MessagePack array (compact, and the order is the function's).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The current version of the signature envelope, the first byte of every message.
pub const WIRE_VERSION: u8 = 1;

/// Encodes `value` as a positional MessagePack array (arguments, results).
pub fn to_vec<T: Serialize + ?Sized>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Encodes `value` as a MessagePack map keyed by field name (envelopes, states).
pub fn to_vec_named<T: Serialize + ?Sized>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Decodes MessagePack bytes into `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Serde helpers that write a `Vec<u8>` as MessagePack `bin` instead of an array of
/// integers (half the size and no per-byte decoding).
pub(crate) mod bytes {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    /// The same for `Option<Vec<u8>>`.
    pub(crate) mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            v: &Option<Vec<u8>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&Wrap(b)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Own>::deserialize(d)?.map(|o| o.0))
        }

        struct Wrap<'a>(&'a [u8]);

        impl serde::Serialize for Wrap<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }

        struct Own(Vec<u8>);

        impl<'de> Deserialize<'de> for Own {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Own)
            }
        }
    }
}

/// Splits a MessagePack array into its length and the bytes of its elements.
fn split_array(args: &[u8]) -> Result<(usize, &[u8])> {
    let bad = || Error::Decode {
        what: "task arguments",
        reason: "not a MessagePack array".into(),
    };
    match args.split_first() {
        Some((&b, rest)) if b & 0xf0 == 0x90 => Ok((usize::from(b & 0x0f), rest)),
        Some((0xdc, rest)) if rest.len() >= 2 => Ok((
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
        )),
        Some((0xdd, rest)) if rest.len() >= 4 => {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            Ok((usize::try_from(n).map_err(|_| bad())?, &rest[4..]))
        }
        _ => Err(bad()),
    }
}

/// Writes a MessagePack array header for `n` elements.
pub fn write_array_len(out: &mut Vec<u8>, n: usize) -> Result<()> {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        let n = u32::try_from(n).map_err(|_| Error::Encode {
            what: "task arguments",
            reason: "too many arguments".into(),
        })?;
        out.push(0xdd);
        out.extend_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

/// Appends an encoded value as the last element of an encoded argument array (how a
/// workflow step receives the previous step's result).
pub fn append_arg(args: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    let (n, body) = split_array(args)?;
    let mut out = Vec::with_capacity(args.len() + value.len() + 4);
    write_array_len(&mut out, n + 1)?;
    out.extend_from_slice(body);
    out.extend_from_slice(value);
    Ok(out)
}

/// Prepends an encoded value as the first element of an encoded argument array (how
/// an error callback receives the error text).
pub fn prepend_arg(args: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    let (n, body) = split_array(args)?;
    let mut out = Vec::with_capacity(args.len() + value.len() + 4);
    write_array_len(&mut out, n + 1)?;
    out.extend_from_slice(value);
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_prepend_keep_positional_arrays_valid() {
        for len in [0usize, 1, 15, 16, 70_000] {
            let args: Vec<u32> = (0..len as u32).collect();
            let enc = to_vec(&args, "t").expect("encode");
            let extra = to_vec(&7u32, "t").expect("encode");
            let appended: Vec<u32> =
                from_slice(&append_arg(&enc, &extra).expect("append"), "t").expect("decode");
            assert_eq!(appended.len(), len + 1);
            assert_eq!(appended.last(), Some(&7));
            let prepended: Vec<u32> =
                from_slice(&prepend_arg(&enc, &extra).expect("prepend"), "t").expect("decode");
            assert_eq!(prepended.first(), Some(&7));
            assert_eq!(prepended.len(), len + 1);
        }
    }

    #[test]
    fn rejects_non_arrays() {
        assert!(append_arg(&[0x01], &[0x01]).is_err());
        assert!(append_arg(&[], &[0x01]).is_err());
        assert!(append_arg(&[0xdc, 0x00], &[0x01]).is_err());
    }
}
