//! MessagePack values (task arguments and results) shown as JSON.

use serde_json::{Map, Number, Value as Json};

use crate::error::{Error, Result};

/// rmpv's depth budget: each array, map or string level spends two, so values nest at
/// most about 100 levels deep; deeper ones (never a task's arguments) are refused
/// before they can exhaust a small thread stack.
const MAX_DEPTH: usize = 200;

/// Decodes one MessagePack value (task arguments, a task's result) and turns it into
/// JSON, for people and tools that inspect tasks.
///
/// The bytes are decoded by [`rmpv`] (nesting is bounded to about 100 levels, so
/// hostile input cannot exhaust the stack), then mapped one to one:
///
/// | MessagePack | JSON |
/// |---|---|
/// | nil | `null` |
/// | boolean | boolean |
/// | integer | number (exact, any value of `i64` or `u64`) |
/// | float 32/64 | number; NaN and infinities, which JSON lacks, as the strings `"NaN"`, `"inf"`, `"-inf"` |
/// | str | string (invalid UTF-8 replaced by U+FFFD) |
/// | bin | array of numbers 0–255: what `serde_json` prints for the same `Vec<u8>` or `serde_bytes` value |
/// | array | array |
/// | map | object; a key that is not a string is written as its own JSON text (`1`, `true`, `[1,2]`), and of keys equal that way the last wins |
/// | ext (type, data) | `{"ext": type, "data": [numbers]}` |
///
/// The message format encodes arguments positionally (`to_vec`), so a struct argument
/// is an array of its field values in declaration order, and an enum's unit variant is
/// its name; the task's schema (`add(i64, i64) -> i64`) says which is which.
///
/// # Errors
/// [`Error::Decode`] when the bytes are not exactly one MessagePack value.
///
/// # Examples
/// ```
/// use machinery_core::inspect::msgpack_to_json;
///
/// let bytes = rmp_serde::to_vec(&(1, "two", vec![3.5])).unwrap();
/// assert_eq!(msgpack_to_json(&bytes)?, serde_json::json!([1, "two", [3.5]]));
/// # Ok::<(), machinery_core::Error>(())
/// ```
pub fn msgpack_to_json(bytes: &[u8]) -> Result<Json> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH).map_err(|e| {
        Error::Decode {
            what: "MessagePack value",
            reason: e.to_string(),
        }
    })?;
    if !rest.is_empty() {
        return Err(Error::Decode {
            what: "MessagePack value",
            reason: format!("{} bytes left after the value", rest.len()),
        });
    }
    Ok(to_json(value))
}

fn bytes_json(bytes: &[u8]) -> Json {
    Json::Array(bytes.iter().map(|b| Json::from(*b)).collect())
}

fn float_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::from("NaN"),
        None if f > 0.0 => Json::from("inf"),
        None => Json::from("-inf"),
    }
}

fn to_json(value: rmpv::Value) -> Json {
    use rmpv::Value as Mp;
    match value {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(b),
        Mp::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(n)) => Json::from(n),
            // rmpv's integers are always one of the two.
            (None, None) => Json::Null,
        },
        Mp::F32(f) => float_json(f64::from(f)),
        Mp::F64(f) => float_json(f),
        Mp::String(s) => Json::String(match String::from_utf8(s.into_bytes()) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }),
        Mp::Binary(b) => bytes_json(&b),
        Mp::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Mp::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(v));
            }
            Json::Object(map)
        }
        Mp::Ext(kind, data) => {
            let mut map = Map::with_capacity(2);
            map.insert("ext".to_owned(), Json::from(kind));
            map.insert("data".to_owned(), bytes_json(&data));
            Json::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::json;

    use super::*;

    fn mp<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).unwrap()
    }

    #[test]
    fn scalars_and_containers() {
        assert_eq!(msgpack_to_json(&mp(&())).unwrap(), Json::Null);
        assert_eq!(
            msgpack_to_json(&mp(&(u64::MAX, i64::MIN, true, "é"))).unwrap(),
            json!([u64::MAX, i64::MIN, true, "é"])
        );
        assert_eq!(
            msgpack_to_json(&mp(&(1.5f32, f64::NAN, f64::INFINITY, -f64::INFINITY))).unwrap(),
            json!([1.5, "NaN", "inf", "-inf"])
        );
        let map: BTreeMap<i32, &str> = [(1, "a"), (-2, "b")].into();
        assert_eq!(
            msgpack_to_json(&mp(&map)).unwrap(),
            json!({"1": "a", "-2": "b"})
        );
    }

    #[test]
    fn struct_args_are_positional_and_named_results_keep_names() {
        #[derive(Serialize)]
        struct Point {
            x: i32,
            y: i32,
        }
        #[derive(Serialize)]
        enum Shape {
            Dot,
            Circle(u8),
        }
        assert_eq!(
            msgpack_to_json(&mp(&(Point { x: 1, y: 2 }, Shape::Dot, Shape::Circle(3)))).unwrap(),
            json!([[1, 2], "Dot", {"Circle": 3}])
        );
        let named = rmp_serde::to_vec_named(&Point { x: 1, y: 2 }).unwrap();
        assert_eq!(msgpack_to_json(&named).unwrap(), json!({"x": 1, "y": 2}));
    }

    #[test]
    fn bin_is_an_array_of_numbers_and_ext_is_tagged() {
        let bin = mp(&serde_bytes_like(&[0, 255]));
        assert_eq!(msgpack_to_json(&bin).unwrap(), json!([0, 255]));
        // fixext1, type 5, data 0x2a
        assert_eq!(
            msgpack_to_json(&[0xd4, 5, 0x2a]).unwrap(),
            json!({"ext": 5, "data": [42]})
        );
        // A map keyed by an array: the key is its JSON text.
        let mut bytes = vec![0x81, 0x92, 1, 2, 0xc3];
        assert_eq!(msgpack_to_json(&bytes).unwrap(), json!({"[1,2]": true}));
        // Invalid UTF-8 in a str.
        bytes = vec![0xa2, 0xff, 0x41];
        assert_eq!(msgpack_to_json(&bytes).unwrap(), json!("\u{fffd}A"));
    }

    fn serde_bytes_like(b: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(b)
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        let err = msgpack_to_json(&[0x92, 1]).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        let err = msgpack_to_json(&[1, 2]).unwrap_err();
        assert!(err.to_string().contains("1 bytes left"), "{err}");
        // Nesting deeper than the bound is refused, not a stack overflow.
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        let err = msgpack_to_json(&deep).unwrap_err();
        assert!(err.to_string().contains("depth"), "{err}");
        let mut fine = vec![0x91; 90];
        fine.push(0xc0);
        assert!(msgpack_to_json(&fine).is_ok());
    }
}
