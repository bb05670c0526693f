//! The `redis:` section of the configuration.

use std::ops::Deref;
use std::time::Duration;

use machinery_core::__private::inventory;
use machinery_core::Config;
use machinery_core::config::{
    EngineSection, FieldError, Section, check_duration, serde_duration, serde_whole,
};
use serde::Deserialize;

/// Most messages one blocking read may take.
const MAX_FETCH_BATCH: usize = 1000;

/// Settings only the Redis engine reads: the `redis:` mapping in YAML and the
/// `MACHINERY_REDIS_*` variables. Read it with `config.section::<RedisConfig>()`, change
/// it with `config.section_mut::<RedisConfig>()`.
///
/// | YAML key | environment variable | default | accepted |
/// |---|---|---|---|
/// | `redis.key_prefix` | `MACHINERY_REDIS_KEY_PREFIX` | `machinery` | non-empty, no whitespace, `{` or `}` |
/// | `redis.connect_timeout_ms` | `MACHINERY_REDIS_CONNECT_TIMEOUT_MS` | `5s` | duration, bare number = milliseconds, at least `1ms` |
/// | `redis.response_timeout_ms` | `MACHINERY_REDIS_RESPONSE_TIMEOUT_MS` | `5s` | duration, bare number = milliseconds, at least `1ms` |
/// | `redis.fetch_batch` | `MACHINERY_REDIS_FETCH_BATCH` | `64` | 1 to 1000 |
/// | `redis.block_ms` | `MACHINERY_REDIS_BLOCK_MS` | `5s` | duration, bare number = milliseconds, at least `1ms` |
///
/// The keys ending in `_ms` keep their historical meaning: a bare number counts
/// milliseconds (`block_ms: 250`); any duration form works too (`block_ms: 2s`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use machinery_core::Config;
/// use machinery_redis::RedisConfig;
///
/// let config = Config::from_yaml_str("redis:\n  key_prefix: app\n  block_ms: 250\n")?;
/// let redis: RedisConfig = config.section();
/// assert_eq!(redis.key_prefix, "app");
/// assert_eq!(redis.block, Duration::from_millis(250));
/// # Ok::<(), machinery_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Prefix of every Redis key (`redis.key_prefix`, `MACHINERY_REDIS_KEY_PREFIX`);
    /// default `machinery`; non-empty, without whitespace, `{` or `}`.
    pub key_prefix: String,
    /// How long to wait for a connection (`redis.connect_timeout_ms`,
    /// `MACHINERY_REDIS_CONNECT_TIMEOUT_MS`); default 5 s; at least 1 ms.
    #[serde(
        rename = "connect_timeout_ms",
        deserialize_with = "serde_duration::millis"
    )]
    pub connect_timeout: Duration,
    /// How long to wait for the reply to a non-blocking command
    /// (`redis.response_timeout_ms`, `MACHINERY_REDIS_RESPONSE_TIMEOUT_MS`); default 5 s;
    /// at least 1 ms.
    #[serde(
        rename = "response_timeout_ms",
        deserialize_with = "serde_duration::millis"
    )]
    pub response_timeout: Duration,
    /// Most messages taken by one blocking read (`redis.fetch_batch`,
    /// `MACHINERY_REDIS_FETCH_BATCH`); default 64; 1 to 1000.
    #[serde(deserialize_with = "serde_whole::deserialize")]
    pub fetch_batch: usize,
    /// How long one blocking read waits (`redis.block_ms`, `MACHINERY_REDIS_BLOCK_MS`);
    /// default 5 s; at least 1 ms.
    #[serde(rename = "block_ms", deserialize_with = "serde_duration::millis")]
    pub block: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            key_prefix: "machinery".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            fetch_batch: 64,
            block: Duration::from_secs(5),
        }
    }
}

impl EngineSection for RedisConfig {
    const NAME: &'static str = "redis";

    fn validate(&self) -> Result<(), FieldError> {
        let RedisConfig {
            key_prefix,
            connect_timeout,
            response_timeout,
            fetch_batch,
            block,
        } = self;
        let invalid = |field, reason| Err(FieldError { field, reason });
        if key_prefix.is_empty()
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return invalid(
                "key_prefix",
                format!(
                    "expected a non-empty key prefix without whitespace, `{{` or `}}`; got `{}`",
                    key_prefix.escape_debug()
                ),
            );
        }
        let durations = [
            // Zero would time out every connection and command (or, racing, only
            // some): refused rather than given a meaning.
            (
                "connect_timeout_ms",
                *connect_timeout,
                Duration::from_millis(1),
                "at least 1ms",
            ),
            (
                "response_timeout_ms",
                *response_timeout,
                Duration::from_millis(1),
                "at least 1ms",
            ),
            ("block_ms", *block, Duration::from_millis(1), "at least 1ms"),
        ];
        for (field, value, min, rule) in durations {
            if let Err(reason) = check_duration(value, min, rule) {
                return invalid(field, reason);
            }
        }
        if !(1..=MAX_FETCH_BATCH).contains(fetch_batch) {
            return invalid(
                "fetch_batch",
                format!(
                    "expected a whole number of messages, 1 to {MAX_FETCH_BATCH}; got `{fetch_batch}`"
                ),
            );
        }
        Ok(())
    }
}

inventory::submit! { Section::of::<RedisConfig>() }

/// The configuration an engine runs with: the core keys (through `Deref`) and the
/// `redis` section, read once at connect.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    core: Config,
    pub(crate) redis: RedisConfig,
}

impl Settings {
    /// Reads and validates the Redis section of `config`.
    pub(crate) fn new(config: &Config) -> crate::Result<Self> {
        let redis: RedisConfig = config.section();
        redis.validate().map_err(|e| crate::Error::Config {
            key: format!("{}.{}", RedisConfig::NAME, e.field),
            reason: e.reason,
        })?;
        Ok(Settings {
            core: config.clone(),
            redis,
        })
    }
}

impl Deref for Settings {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.core
    }
}
