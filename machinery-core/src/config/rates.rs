//! The `rate_limits` key: a mapping of queue → rate in YAML, `queue=rate,…` in the
//! environment.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::rate::RateLimit;

/// Deserializes `rate_limits`: a mapping (`{emails: 100/s, sms: 10/m}`) or a string
/// (`"emails=100/s,sms=10/m"`, as `MACHINERY_RATE_LIMITS` gives it; empty entries are
/// skipped).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, RateLimit>, D::Error> {
    d.deserialize_any(RatesVisitor)
}

struct RatesVisitor;

impl<'de> Visitor<'de> for RatesVisitor {
    type Value = BTreeMap<String, RateLimit>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of queue names to rates, or `queue=rate,…`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rates = BTreeMap::new();
        while let Some(queue) = map.next_key::<String>()? {
            let rate: RateText = map.next_value()?;
            check_queue(&queue).map_err(de::Error::custom)?;
            let rate = RateLimit::parse(&rate.0)
                .map_err(|e| de::Error::custom(format!("queue `{queue}`: {e}")))?;
            rates.insert(queue, rate);
        }
        Ok(rates)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let mut rates = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (queue, rate) = entry.split_once('=').ok_or_else(|| {
                E::custom(format!(
                    "`{}` is not `queue=rate`: expected entries such as \
                     \"emails=100/s,sms=10/m\"",
                    entry.escape_debug()
                ))
            })?;
            let queue = queue.trim();
            check_queue(queue).map_err(E::custom)?;
            let rate = RateLimit::parse(rate.trim())
                .map_err(|e| E::custom(format!("queue `{queue}`: {e}")))?;
            if rates.insert(queue.to_owned(), rate).is_some() {
                return Err(E::custom(format!("queue `{queue}` is listed twice")));
            }
        }
        Ok(rates)
    }
}

/// A rate written as text, or as a bare number in YAML (refused with the hint).
struct RateText(String);

impl<'de> Deserialize<'de> for RateText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RateText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"100/s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateText, E> {
                Ok(RateText(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RateText, E> {
                Ok(RateText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RateText, E> {
                Ok(RateText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RateText, E> {
                Ok(RateText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn check_queue(queue: &str) -> Result<(), String> {
    if queue.is_empty() || queue.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "expected a non-empty queue name without whitespace; got `{}`",
            queue.escape_debug()
        ));
    }
    Ok(())
}
