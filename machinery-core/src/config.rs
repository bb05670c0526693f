//! Server configuration: engines, queues, time-to-live values and limits.
//!
//! A [`Config`] starts from its defaults, then takes values from a YAML file and from
//! `MACHINERY_*` environment variables, the environment winning over the file. Every
//! constructor validates the result, so a `Config` obtained from one is ready to use.
//!
//! | YAML key | environment variable | default | accepted |
//! |---|---|---|---|
//! | `broker` | `MACHINERY_BROKER` | `memory://` | URL with scheme `memory`, `redis`, `rediss`, `redis+unix` or `unix` |
//! | `result_backend` | `MACHINERY_RESULT_BACKEND` | the broker | same as `broker` |
//! | `default_queue` | `MACHINERY_DEFAULT_QUEUE` | `machinery_tasks` | non-empty, no whitespace |
//! | `results_expire_in` | `MACHINERY_RESULTS_EXPIRE_IN` | `3600` | seconds, `0` = keep forever |
//! | `visibility_timeout` | `MACHINERY_VISIBILITY_TIMEOUT` | `60` | seconds, at least 1 |
//! | `max_deliveries` | `MACHINERY_MAX_DELIVERIES` | `10` | at least 2 |
//! | `unregistered_requeues` | `MACHINERY_UNREGISTERED_REQUEUES` | `3` | `0` = dead-letter at once |
//! | `retry_max_delay` | `MACHINERY_RETRY_MAX_DELAY` | `600` | seconds, at least 1 |
//! | `max_message_bytes` | `MACHINERY_MAX_MESSAGE_BYTES` | `8388608` (8 MiB) | at least 1024 |
//! | `started_after_ms` | `MACHINERY_STARTED_AFTER_MS` | `10` | milliseconds, `0` = every task |
//! | `redis.key_prefix` | `MACHINERY_REDIS_KEY_PREFIX` | `machinery` | non-empty, no whitespace, `{` or `}` |
//! | `redis.connect_timeout_ms` | `MACHINERY_REDIS_CONNECT_TIMEOUT_MS` | `5000` | milliseconds |
//! | `redis.response_timeout_ms` | `MACHINERY_REDIS_RESPONSE_TIMEOUT_MS` | `5000` | milliseconds |
//! | `redis.fetch_batch` | `MACHINERY_REDIS_FETCH_BATCH` | `64` | 1 to 1000 |
//! | `redis.block_ms` | `MACHINERY_REDIS_BLOCK_MS` | `5000` | milliseconds, at least 1 |
//!
//! Numbers are whole numbers. Durations must also fit in signed 64-bit milliseconds,
//! the unit Redis uses for expiries and blocking reads, so no engine overflows
//! converting them. An empty environment variable counts as unset; an unknown
//! `MACHINERY_*` variable or YAML key is an error, so a typo is never silently
//! ignored (`MACHINERY_LOG` is reserved for the examples and ignored here).
//!
//! A YAML file looks like this:
//!
//! ```yaml
//! broker: redis://:secret@localhost:6379/0
//! results_expire_in: 86400
//! redis:
//!   key_prefix: myapp
//! ```

use std::fmt;
use std::num::IntErrorKind;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// The prefix of every environment variable read by [`Config::apply_env`].
const ENV_PREFIX: &str = "MACHINERY_";
/// Reserved for the examples' log filter; never an error, never read here.
const ENV_IGNORED: &str = "MACHINERY_LOG";
/// The URL schemes accepted for the broker and the result backend.
const SCHEMES: [&str; 5] = ["memory", "redis", "rediss", "redis+unix", "unix"];
/// What replaces a password in [`redact_url`].
const MASK: &str = "***";
/// Largest duration in seconds whose milliseconds fit in an `i64`.
const MAX_SECONDS: u64 = i64::MAX as u64 / 1000;
/// Largest duration in milliseconds that fits in an `i64`.
const MAX_MILLIS: u64 = i64::MAX as u64;
/// Source name used in errors of [`Config::from_yaml_str`].
const INLINE_YAML: &str = "<YAML string>";

/// Configuration of a server: engines, queues, TTLs.
///
/// Build one with [`Config::from_env`], [`Config::from_yaml`] or
/// [`Config::from_yaml_str`], or start from [`Config::default`] and set fields.
/// The [module documentation](self) lists every key with its environment variable.
///
/// `Debug` never shows a password: URLs are printed through [`redact_url`].
///
/// # Examples
///
/// ```
/// use machinery_core::Config;
///
/// let config = Config::from_yaml_str("broker: redis://localhost:6379/0\nresults_expire_in: 0")?;
/// assert_eq!(config.result_backend_url(), "redis://localhost:6379/0");
/// assert_eq!(config.results_ttl(), None);
/// assert_eq!(config.default_queue, "machinery_tasks");
/// # Ok::<(), machinery_core::Error>(())
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// URL of the broker (`broker`, `MACHINERY_BROKER`); default `memory://`.
    pub broker: String,
    /// URL of the result backend (`result_backend`, `MACHINERY_RESULT_BACKEND`);
    /// `None` means the same URL as the broker.
    pub result_backend: Option<String>,
    /// Queue that tasks go to when their signature names none (`default_queue`,
    /// `MACHINERY_DEFAULT_QUEUE`); default `machinery_tasks`.
    pub default_queue: String,
    /// Seconds a final state (SUCCESS, FAILURE) is kept from its write, and a chord's
    /// bookkeeping from its callback's final state (`results_expire_in`,
    /// `MACHINERY_RESULTS_EXPIRE_IN`); default 3600; `0` keeps them forever. Non-final
    /// states never expire.
    pub results_expire_in: u64,
    /// Seconds a delivery stays invisible to other workers without a heartbeat
    /// (`visibility_timeout`, `MACHINERY_VISIBILITY_TIMEOUT`); default 60; at least 1.
    pub visibility_timeout: u64,
    /// A message delivered more times than this (its workers crashed) goes to the
    /// dead-letter queue (`max_deliveries`, `MACHINERY_MAX_DELIVERIES`); default 10;
    /// at least 2: a message running beside one that kills the worker is charged that
    /// delivery once (it then runs alone), which must not dead-letter it.
    pub max_deliveries: u32,
    /// Times a message naming a task no worker knows is requeued before it is
    /// dead-lettered (`unregistered_requeues`, `MACHINERY_UNREGISTERED_REQUEUES`);
    /// default 3.
    pub unregistered_requeues: u32,
    /// Cap, in seconds, of the Fibonacci retry backoff (`retry_max_delay`,
    /// `MACHINERY_RETRY_MAX_DELAY`); default 600; at least 1.
    pub retry_max_delay: u64,
    /// Largest encoded message the broker accepts (`max_message_bytes`,
    /// `MACHINERY_MAX_MESSAGE_BYTES`); default 8 MiB; at least 1024.
    pub max_message_bytes: usize,
    /// A task still running this many milliseconds after it started is recorded as
    /// STARTED (`started_after_ms`, `MACHINERY_STARTED_AFTER_MS`); default 10. A task
    /// that finishes sooner goes from PENDING straight to its final state, which spares
    /// the result backend one write per task (its STARTED could only have been seen for
    /// a few milliseconds). `0` records STARTED for every task before it runs.
    pub started_after_ms: u64,
    /// Settings only the Redis engine reads (the `redis:` mapping in YAML).
    pub redis: RedisConfig,
}

/// Settings only the Redis engine reads.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Prefix of every Redis key (`redis.key_prefix`, `MACHINERY_REDIS_KEY_PREFIX`);
    /// default `machinery`; non-empty, without whitespace, `{` or `}`.
    pub key_prefix: String,
    /// Milliseconds to wait for a connection (`redis.connect_timeout_ms`,
    /// `MACHINERY_REDIS_CONNECT_TIMEOUT_MS`); default 5000.
    pub connect_timeout_ms: u64,
    /// Milliseconds to wait for the reply to a non-blocking command
    /// (`redis.response_timeout_ms`, `MACHINERY_REDIS_RESPONSE_TIMEOUT_MS`); default 5000.
    pub response_timeout_ms: u64,
    /// Most messages taken by one blocking read (`redis.fetch_batch`,
    /// `MACHINERY_REDIS_FETCH_BATCH`); default 64; 1 to 1000.
    pub fetch_batch: usize,
    /// Milliseconds one blocking read waits (`redis.block_ms`,
    /// `MACHINERY_REDIS_BLOCK_MS`); default 5000; at least 1.
    pub block_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: "memory://".to_owned(),
            result_backend: None,
            default_queue: "machinery_tasks".to_owned(),
            results_expire_in: 3600,
            visibility_timeout: 60,
            max_deliveries: 10,
            unregistered_requeues: 3,
            retry_max_delay: 600,
            max_message_bytes: 8 * 1024 * 1024,
            started_after_ms: 10,
            redis: RedisConfig::default(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            key_prefix: "machinery".to_owned(),
            connect_timeout_ms: 5000,
            response_timeout_ms: 5000,
            fetch_batch: 64,
            block_ms: 5000,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Config {
            broker,
            result_backend,
            default_queue,
            results_expire_in,
            visibility_timeout,
            max_deliveries,
            unregistered_requeues,
            retry_max_delay,
            max_message_bytes,
            started_after_ms,
            redis,
        } = self;
        f.debug_struct("Config")
            .field("broker", &redact_url(broker))
            .field("result_backend", &result_backend.as_deref().map(redact_url))
            .field("default_queue", default_queue)
            .field("results_expire_in", results_expire_in)
            .field("visibility_timeout", visibility_timeout)
            .field("max_deliveries", max_deliveries)
            .field("unregistered_requeues", unregistered_requeues)
            .field("retry_max_delay", retry_max_delay)
            .field("max_message_bytes", max_message_bytes)
            .field("started_after_ms", started_after_ms)
            .field("redis", redis)
            .finish()
    }
}

impl Config {
    /// The defaults, overlaid with the `MACHINERY_*` environment variables, validated.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when one is unknown or holds an invalid
    /// value (see [`Config::apply_env`]).
    pub fn from_env() -> Result<Config> {
        let mut config = Config::default();
        config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults, overlaid with the YAML file at `path`, then with the
    /// `MACHINERY_*` environment variables (the environment wins), validated.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigFile`] with the path when the file cannot be read, is not valid
    /// YAML or is not a mapping; [`Error::Config`] naming the key (`redis.block_ms`)
    /// or variable when one is unknown or holds an invalid value.
    pub fn from_yaml(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut config = Config::default();
        config.apply_yaml(&text, &shown)?;
        config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults, overlaid with the YAML text, validated; the environment is not
    /// read. For tests, and for programs that embed or fetch their configuration.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigFile`] with the path `<YAML string>` when the text is not valid
    /// YAML or is not a mapping; [`Error::Config`] naming the key (`results_expire_in`,
    /// `redis.key_prefix`) when one is unknown or holds an invalid value.
    pub fn from_yaml_str(yaml: &str) -> Result<Config> {
        let mut config = Config::default();
        config.apply_yaml(yaml, INLINE_YAML)?;
        config.validate()?;
        Ok(config)
    }

    /// Overlays the `MACHINERY_*` environment variables on this configuration.
    ///
    /// Variables with an empty value count as unset; `MACHINERY_LOG` is ignored.
    /// On error nothing is changed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when it is not one of the names listed in
    /// the [module documentation](self), when its value is invalid, or when its value
    /// is not UTF-8.
    pub fn apply_env(&mut self) -> Result<()> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if !name.starts_with(ENV_PREFIX) || name == ENV_IGNORED {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| Error::config(&name, "expected UTF-8 text"))?;
            vars.push((name, value));
        }
        self.apply_vars(vars)
    }

    /// Overlays the given `(name, value)` pairs as if they were environment variables:
    /// what [`Config::apply_env`] does, without touching the process environment.
    ///
    /// Names not starting with `MACHINERY_`, the name `MACHINERY_LOG` and empty values
    /// are skipped. Each value is checked as it is read, so the configuration stays
    /// valid if it was; on error nothing is changed. Errors are reported in name order,
    /// whatever the order of `vars`; when a name repeats, its last value wins.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] whose key is the variable name (`MACHINERY_RESULTS_EXPIRE_IN`),
    /// when the name is unknown (the reason lists the valid names) or its value is
    /// invalid (the reason says what is accepted).
    pub fn apply_vars(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, value)| {
                name.starts_with(ENV_PREFIX) && name != ENV_IGNORED && !value.is_empty()
            })
            .collect();
        // Stable: a repeated name keeps its order, so its last value wins.
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut next = self.clone();
        for (name, value) in &vars {
            let key = Key::ALL
                .into_iter()
                .find(|key| key.env() == name)
                .ok_or_else(|| unknown_env(name))?;
            next.set(key, name, Input::Text(value))?;
        }
        *self = next;
        Ok(())
    }

    /// The URL of the result backend: [`Config::result_backend`] when set, else the broker's.
    pub fn result_backend_url(&self) -> &str {
        self.result_backend.as_deref().unwrap_or(&self.broker)
    }

    /// How long task states are kept; `None` when they are kept forever
    /// (`results_expire_in` is 0).
    pub fn results_ttl(&self) -> Option<Duration> {
        if self.results_expire_in == 0 {
            None
        } else {
            Some(Duration::from_secs(self.results_expire_in))
        }
    }

    /// How long a task runs before it is recorded as STARTED
    /// ([`Config::started_after_ms`]); zero records every task.
    pub fn started_after(&self) -> Duration {
        Duration::from_millis(self.started_after_ms)
    }

    /// Checks every value against the rules in the [module documentation](self).
    /// Every constructor calls it; call it again after changing fields by hand.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for the first invalid value, whose key is the YAML name
    /// (`visibility_timeout`, `redis.key_prefix`) and whose reason says what is accepted.
    pub fn validate(&self) -> Result<()> {
        let Config {
            broker,
            result_backend,
            default_queue,
            results_expire_in,
            visibility_timeout,
            max_deliveries,
            unregistered_requeues,
            retry_max_delay,
            max_message_bytes,
            started_after_ms,
            redis:
                RedisConfig {
                    key_prefix,
                    connect_timeout_ms,
                    response_timeout_ms,
                    fetch_batch,
                    block_ms,
                },
        } = self;
        check_text(Key::Broker, Key::Broker.yaml(), broker)?;
        if let Some(backend) = result_backend {
            check_text(Key::ResultBackend, Key::ResultBackend.yaml(), backend)?;
        }
        check_text(Key::DefaultQueue, Key::DefaultQueue.yaml(), default_queue)?;
        check_text(Key::RedisKeyPrefix, Key::RedisKeyPrefix.yaml(), key_prefix)?;
        let numbers = [
            (Key::ResultsExpireIn, *results_expire_in),
            (Key::VisibilityTimeout, *visibility_timeout),
            (Key::MaxDeliveries, u64::from(*max_deliveries)),
            (Key::UnregisteredRequeues, u64::from(*unregistered_requeues)),
            (Key::RetryMaxDelay, *retry_max_delay),
            (Key::MaxMessageBytes, saturate(*max_message_bytes)),
            (Key::StartedAfterMs, *started_after_ms),
            (Key::RedisConnectTimeoutMs, *connect_timeout_ms),
            (Key::RedisResponseTimeoutMs, *response_timeout_ms),
            (Key::RedisFetchBatch, saturate(*fetch_batch)),
            (Key::RedisBlockMs, *block_ms),
        ];
        for (key, value) in numbers {
            check_number(key, key.yaml(), value, &value.to_string())?;
        }
        Ok(())
    }

    /// Overlays a YAML document; `source` names it in [`Error::ConfigFile`].
    fn apply_yaml(&mut self, yaml: &str, source: &str) -> Result<()> {
        let file_error = |reason: String| Error::ConfigFile {
            path: source.to_owned(),
            reason,
        };
        let document: Yaml = serde_saphyr::from_str(yaml).map_err(|e| {
            // Without snippets: a snippet would quote the text, passwords included.
            file_error(e.render_with_options(serde_saphyr::render_options! {
                formatter: &serde_saphyr::UserMessageFormatter,
                snippets: serde_saphyr::SnippetMode::Off,
            }))
        })?;
        let entries = match document {
            Yaml::Null => return Ok(()),
            Yaml::Map(entries) => entries,
            other => {
                return Err(file_error(format!(
                    "expected a mapping of settings (`broker: memory://`, …); got {}",
                    other.describe()
                )));
            }
        };
        let mut next = self.clone();
        for (name, value) in &entries {
            let name = name.key_text();
            if name != "redis" {
                next.set_yaml(&name, false, value)?;
                continue;
            }
            match value {
                Yaml::Null => {}
                Yaml::Map(redis) => {
                    for (name, value) in redis {
                        next.set_yaml(&name.key_text(), true, value)?;
                    }
                }
                other => {
                    return Err(Error::config(
                        "redis",
                        format!(
                            "expected a mapping of Redis settings ({}); got {}",
                            redis_leaves().collect::<Vec<_>>().join(", "),
                            other.describe()
                        ),
                    ));
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// Sets the field named `name` at the top level or, with `in_redis`, in `redis:`.
    fn set_yaml(&mut self, name: &str, in_redis: bool, value: &Yaml) -> Result<()> {
        let path = if in_redis {
            format!("redis.{name}")
        } else {
            name.to_owned()
        };
        let key = Key::ALL
            .into_iter()
            .find(|key| key.is_redis() == in_redis && key.yaml() == path)
            .ok_or_else(|| unknown_yaml(name, in_redis))?;
        if matches!(value, Yaml::Null) {
            // `key:` with no value, or `key: ~`: unset, as an empty variable is.
            return Ok(());
        }
        self.set(key, &path, Input::Yaml(value))
    }

    /// Parses, checks and stores one value; errors name the key as `spelled`.
    fn set(&mut self, key: Key, spelled: &str, input: Input<'_>) -> Result<()> {
        match key {
            Key::Broker => self.broker = text(key, spelled, input)?,
            Key::ResultBackend => self.result_backend = Some(text(key, spelled, input)?),
            Key::DefaultQueue => self.default_queue = text(key, spelled, input)?,
            Key::RedisKeyPrefix => self.redis.key_prefix = text(key, spelled, input)?,
            Key::ResultsExpireIn => self.results_expire_in = number(key, spelled, input)?,
            Key::VisibilityTimeout => self.visibility_timeout = number(key, spelled, input)?,
            Key::MaxDeliveries => self.max_deliveries = number(key, spelled, input)?,
            Key::UnregisteredRequeues => self.unregistered_requeues = number(key, spelled, input)?,
            Key::RetryMaxDelay => self.retry_max_delay = number(key, spelled, input)?,
            Key::MaxMessageBytes => self.max_message_bytes = number(key, spelled, input)?,
            Key::StartedAfterMs => self.started_after_ms = number(key, spelled, input)?,
            Key::RedisConnectTimeoutMs => {
                self.redis.connect_timeout_ms = number(key, spelled, input)?;
            }
            Key::RedisResponseTimeoutMs => {
                self.redis.response_timeout_ms = number(key, spelled, input)?;
            }
            Key::RedisFetchBatch => self.redis.fetch_batch = number(key, spelled, input)?,
            Key::RedisBlockMs => self.redis.block_ms = number(key, spelled, input)?,
        }
        Ok(())
    }
}

/// Returns `url` with any password replaced by `***`.
///
/// `redis://user:secret@h:1/0` becomes `redis://user:***@h:1/0` and `redis://:secret@h`
/// becomes `redis://:***@h`. A user part without `:` (`redis://secret@h`) is masked
/// whole, since some clients read it as a password, and so are `pass` and `password`
/// query parameters (`redis+unix:///run/redis.sock?pass=secret`). A password holding an
/// unencoded `/`, `?` or `#` is still masked: everything up to the last `@` counts as
/// the user part. A string that is not a URL at all is handled the same way, so it is
/// safe to redact any value before it goes into a log or an error message.
///
/// # Examples
///
/// ```
/// use machinery_core::config::redact_url;
///
/// assert_eq!(redact_url("redis://user:secret@h:1/0"), "redis://user:***@h:1/0");
/// assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
/// assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    // An empty authority (`unix:///run/redis@1.sock`) has no user part, whatever follows.
    let at = if rest.starts_with('/') {
        None
    } else {
        rest.rfind('@')
    };
    let rest = match at {
        Some(at) => {
            let (user_info, after) = rest.split_at(at);
            match user_info.split_once(':') {
                Some((user, password)) => {
                    out.push_str(user);
                    out.push(':');
                    if !password.is_empty() {
                        out.push_str(MASK);
                    }
                }
                None if !user_info.is_empty() => out.push_str(MASK),
                None => {}
            }
            after
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((path, query_and_fragment)) => {
            let (query, fragment) = match query_and_fragment.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query_and_fragment, None),
            };
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, value))
                        if !value.is_empty()
                            && (name.eq_ignore_ascii_case("pass")
                                || name.eq_ignore_ascii_case("password")) =>
                    {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(MASK);
                    }
                    _ => out.push_str(pair),
                }
            }
            if let Some(fragment) = fragment {
                out.push('#');
                out.push_str(fragment);
            }
        }
        None => out.push_str(rest),
    }
    out
}

/// One configuration key; the single table of names, rules and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Broker,
    ResultBackend,
    DefaultQueue,
    ResultsExpireIn,
    VisibilityTimeout,
    MaxDeliveries,
    UnregisteredRequeues,
    RetryMaxDelay,
    MaxMessageBytes,
    StartedAfterMs,
    RedisKeyPrefix,
    RedisConnectTimeoutMs,
    RedisResponseTimeoutMs,
    RedisFetchBatch,
    RedisBlockMs,
}

impl Key {
    const ALL: [Key; 15] = [
        Key::Broker,
        Key::ResultBackend,
        Key::DefaultQueue,
        Key::ResultsExpireIn,
        Key::VisibilityTimeout,
        Key::MaxDeliveries,
        Key::UnregisteredRequeues,
        Key::RetryMaxDelay,
        Key::MaxMessageBytes,
        Key::StartedAfterMs,
        Key::RedisKeyPrefix,
        Key::RedisConnectTimeoutMs,
        Key::RedisResponseTimeoutMs,
        Key::RedisFetchBatch,
        Key::RedisBlockMs,
    ];

    /// The YAML path, as errors spell it: `results_expire_in`, `redis.key_prefix`.
    fn yaml(self) -> &'static str {
        match self {
            Key::Broker => "broker",
            Key::ResultBackend => "result_backend",
            Key::DefaultQueue => "default_queue",
            Key::ResultsExpireIn => "results_expire_in",
            Key::VisibilityTimeout => "visibility_timeout",
            Key::MaxDeliveries => "max_deliveries",
            Key::UnregisteredRequeues => "unregistered_requeues",
            Key::RetryMaxDelay => "retry_max_delay",
            Key::MaxMessageBytes => "max_message_bytes",
            Key::StartedAfterMs => "started_after_ms",
            Key::RedisKeyPrefix => "redis.key_prefix",
            Key::RedisConnectTimeoutMs => "redis.connect_timeout_ms",
            Key::RedisResponseTimeoutMs => "redis.response_timeout_ms",
            Key::RedisFetchBatch => "redis.fetch_batch",
            Key::RedisBlockMs => "redis.block_ms",
        }
    }

    /// Whether the key lives in the `redis:` mapping.
    fn is_redis(self) -> bool {
        self.yaml().starts_with("redis.")
    }

    /// The environment variable.
    fn env(self) -> &'static str {
        match self {
            Key::Broker => "MACHINERY_BROKER",
            Key::ResultBackend => "MACHINERY_RESULT_BACKEND",
            Key::DefaultQueue => "MACHINERY_DEFAULT_QUEUE",
            Key::ResultsExpireIn => "MACHINERY_RESULTS_EXPIRE_IN",
            Key::VisibilityTimeout => "MACHINERY_VISIBILITY_TIMEOUT",
            Key::MaxDeliveries => "MACHINERY_MAX_DELIVERIES",
            Key::UnregisteredRequeues => "MACHINERY_UNREGISTERED_REQUEUES",
            Key::RetryMaxDelay => "MACHINERY_RETRY_MAX_DELAY",
            Key::MaxMessageBytes => "MACHINERY_MAX_MESSAGE_BYTES",
            Key::StartedAfterMs => "MACHINERY_STARTED_AFTER_MS",
            Key::RedisKeyPrefix => "MACHINERY_REDIS_KEY_PREFIX",
            Key::RedisConnectTimeoutMs => "MACHINERY_REDIS_CONNECT_TIMEOUT_MS",
            Key::RedisResponseTimeoutMs => "MACHINERY_REDIS_RESPONSE_TIMEOUT_MS",
            Key::RedisFetchBatch => "MACHINERY_REDIS_FETCH_BATCH",
            Key::RedisBlockMs => "MACHINERY_REDIS_BLOCK_MS",
        }
    }

    /// What is accepted, the start of every error reason about this key.
    fn expected(self) -> &'static str {
        match self {
            Key::Broker | Key::ResultBackend => {
                "expected a URL `scheme://…` whose scheme is one of memory, redis, rediss, \
                 redis+unix, unix"
            }
            Key::DefaultQueue => "expected a non-empty queue name without whitespace",
            Key::RedisKeyPrefix => "expected a non-empty key prefix without whitespace, `{` or `}`",
            Key::ResultsExpireIn => "expected a whole number of seconds, 0 = keep forever",
            Key::VisibilityTimeout | Key::RetryMaxDelay => {
                "expected a whole number of seconds, at least 1"
            }
            Key::MaxDeliveries => "expected a whole number of deliveries, at least 2",
            Key::UnregisteredRequeues => {
                "expected a whole number of requeues, 0 = dead-letter at once"
            }
            Key::MaxMessageBytes => "expected a whole number of bytes, at least 1024",
            Key::StartedAfterMs => "expected a whole number of milliseconds, 0 = every task",
            Key::RedisConnectTimeoutMs | Key::RedisResponseTimeoutMs => {
                "expected a whole number of milliseconds"
            }
            Key::RedisFetchBatch => "expected a whole number of messages, 1 to 1000",
            Key::RedisBlockMs => "expected a whole number of milliseconds, at least 1",
        }
    }

    /// Inclusive bounds of a numeric key.
    fn bounds(self) -> (u64, u64) {
        match self {
            Key::ResultsExpireIn => (0, MAX_SECONDS),
            Key::VisibilityTimeout | Key::RetryMaxDelay => (1, MAX_SECONDS),
            Key::MaxDeliveries => (2, u64::from(u32::MAX)),
            Key::UnregisteredRequeues => (0, u64::from(u32::MAX)),
            Key::MaxMessageBytes => (1024, saturate(usize::MAX)),
            Key::StartedAfterMs => (0, MAX_MILLIS),
            Key::RedisConnectTimeoutMs | Key::RedisResponseTimeoutMs => (0, MAX_MILLIS),
            Key::RedisFetchBatch => (1, 1000),
            Key::RedisBlockMs => (1, MAX_MILLIS),
            Key::Broker | Key::ResultBackend | Key::DefaultQueue | Key::RedisKeyPrefix => {
                (0, u64::MAX)
            }
        }
    }
}

/// A value as read: the text of an environment variable, or a YAML node.
#[derive(Clone, Copy)]
enum Input<'a> {
    Text(&'a str),
    Yaml(&'a Yaml),
}

/// Reads and checks a text value.
fn text(key: Key, spelled: &str, input: Input<'_>) -> Result<String> {
    let value = match input {
        Input::Text(value) => value,
        Input::Yaml(Yaml::Str(value)) => value.as_str(),
        Input::Yaml(other) => {
            return Err(Error::config(
                spelled,
                format!(
                    "{}; got {} (quote it to make it text)",
                    key.expected(),
                    other.describe()
                ),
            ));
        }
    };
    check_text(key, spelled, value)?;
    Ok(value.to_owned())
}

/// Checks a text value against the rule of `key`.
fn check_text(key: Key, spelled: &str, value: &str) -> Result<()> {
    let valid = match key {
        Key::Broker | Key::ResultBackend => value
            .split_once("://")
            .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme)),
        Key::DefaultQueue => {
            !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        Key::RedisKeyPrefix => {
            !value.is_empty()
                && !value
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        }
        _ => true,
    };
    if valid {
        return Ok(());
    }
    let shown = match key {
        Key::Broker | Key::ResultBackend => redact_url(value),
        _ => value.to_owned(),
    };
    Err(Error::config(
        spelled,
        format!("{}; got `{}`", key.expected(), shown.escape_debug()),
    ))
}

/// Reads a whole number, checks its bounds and narrows it to the field's type.
fn number<T: TryFrom<u64>>(key: Key, spelled: &str, input: Input<'_>) -> Result<T> {
    let invalid = |got: String| Error::config(spelled, format!("{}; got {got}", key.expected()));
    let text = match input {
        Input::Text(text) => text,
        Input::Yaml(Yaml::Str(text)) => text.as_str(),
        Input::Yaml(Yaml::Int(n)) => {
            return match u64::try_from(*n) {
                Ok(value) => narrow(key, spelled, value, &n.to_string()),
                Err(_) if *n > 0 => Err(too_large(key, spelled, &n.to_string())),
                Err(_) => Err(invalid(format!("`{n}`"))),
            };
        }
        // Integers beyond 64 bits come back from the parser as floats.
        Input::Yaml(Yaml::Float(x)) if x.fract() == 0.0 && *x >= 18_446_744_073_709_551_616.0 => {
            return Err(too_large(key, spelled, &format!("{x:?}")));
        }
        Input::Yaml(other) => return Err(invalid(other.describe())),
    };
    match text.trim().parse::<u64>() {
        Ok(value) => narrow(key, spelled, value, text),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(too_large(key, spelled, text)),
        Err(_) => Err(invalid(format!("`{}`", text.escape_debug()))),
    }
}

/// Checks the bounds of `value` and converts it; `raw` is the value as written.
fn narrow<T: TryFrom<u64>>(key: Key, spelled: &str, value: u64, raw: &str) -> Result<T> {
    check_number(key, spelled, value, raw)?;
    T::try_from(value).map_err(|_| too_large(key, spelled, raw))
}

/// Checks a number against the bounds of `key`; `raw` is the value as written.
fn check_number(key: Key, spelled: &str, value: u64, raw: &str) -> Result<()> {
    let (min, max) = key.bounds();
    if value > max {
        return Err(too_large(key, spelled, raw));
    }
    if value < min {
        return Err(Error::config(
            spelled,
            format!("{}; got `{}`", key.expected(), raw.escape_debug()),
        ));
    }
    Ok(())
}

fn too_large(key: Key, spelled: &str, raw: &str) -> Error {
    let (_, max) = key.bounds();
    Error::config(
        spelled,
        format!(
            "{}, at most {max}; got `{}`",
            key.expected(),
            raw.escape_debug()
        ),
    )
}

/// `usize` as `u64`, saturating on (hypothetical) targets where it is wider.
fn saturate(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn unknown_env(name: &str) -> Error {
    let valid = Key::ALL.map(Key::env);
    Error::config(
        name,
        format!(
            "unknown variable{}; valid variables are {} (`{ENV_IGNORED}` is reserved and \
             ignored)",
            did_you_mean(name, valid.iter().copied()),
            valid.join(", ")
        ),
    )
}

fn unknown_yaml(name: &str, in_redis: bool) -> Error {
    if in_redis {
        let valid: Vec<&str> = redis_leaves().collect();
        return Error::config(
            format!("redis.{name}"),
            format!(
                "unknown key{}; valid keys in `redis` are {}",
                did_you_mean(name, valid.iter().copied()),
                valid.join(", ")
            ),
        );
    }
    // `redis.block_ms: 5` or `redis_block_ms: 5` at the top level.
    let leaf = name
        .strip_prefix("redis.")
        .or_else(|| name.strip_prefix("redis_"));
    if let Some(leaf) = leaf.filter(|leaf| redis_leaves().any(|valid| valid == *leaf)) {
        return Error::config(
            name,
            format!(
                "unknown key; Redis settings go in the `redis` mapping: `redis: {{ {leaf}: … }}`"
            ),
        );
    }
    let mut valid: Vec<&str> = Key::ALL
        .into_iter()
        .filter(|key| !key.is_redis())
        .map(Key::yaml)
        .collect();
    valid.push("redis");
    Error::config(
        name,
        format!(
            "unknown key{}; valid keys are {}",
            did_you_mean(name, valid.iter().copied()),
            valid.join(", ")
        ),
    )
}

/// The keys of the `redis:` mapping: `key_prefix`, ….
fn redis_leaves() -> impl Iterator<Item = &'static str> {
    Key::ALL
        .into_iter()
        .filter_map(|key| key.yaml().strip_prefix("redis."))
}

/// ` (did you mean `x`?)` for the closest candidate within a few edits, else nothing.
fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let name = name.to_ascii_lowercase();
    candidates
        .map(|candidate| {
            (
                edit_distance(&name, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A YAML node, kept loose so that every wrong value is reported by its key with
/// what is accepted, rather than as a type error of the parser.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq,
    Map(Vec<(Yaml, Yaml)>),
}

impl Yaml {
    /// How an error shows a value that has the wrong kind.
    fn describe(&self) -> String {
        match self {
            Yaml::Null => "nothing".to_owned(),
            Yaml::Bool(b) => format!("the boolean `{b}`"),
            Yaml::Int(n) => format!("the integer `{n}`"),
            Yaml::Float(x) => format!("the number `{x:?}`"),
            Yaml::Str(s) => format!("`{}`", s.escape_debug()),
            Yaml::Seq => "a sequence".to_owned(),
            Yaml::Map(_) => "a mapping".to_owned(),
        }
    }

    /// A mapping key as text; keys that are not strings (`1:`) become unknown keys.
    fn key_text(&self) -> String {
        match self {
            Yaml::Str(s) => s.clone(),
            Yaml::Null => "~".to_owned(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Int(n) => n.to_string(),
            Yaml::Float(x) => x.to_string(),
            Yaml::Seq => "[…]".to_owned(),
            Yaml::Map(_) => "{…}".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Int(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Int(i128::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Yaml, E> {
        i128::try_from(v)
            .map(Yaml::Int)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Str(v.to_owned()))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Seq)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Yaml, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Yaml::Seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Yaml, Yaml>()? {
            entries.push(entry);
        }
        Ok(Yaml::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Result<Config> {
        let mut config = Config::default();
        config.apply_vars(vars(pairs))?;
        config.validate()?;
        Ok(config)
    }

    /// The key and reason of an `Error::Config`, panicking on any other result.
    fn config_error<T: fmt::Debug>(result: Result<T>) -> (String, String) {
        match result {
            Err(Error::Config { key, reason }) => (key, reason),
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }

    fn file_error<T: fmt::Debug>(result: Result<T>) -> (String, String) {
        match result {
            Err(Error::ConfigFile { path, reason }) => (path, reason),
            other => panic!("expected Error::ConfigFile, got {other:?}"),
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    // ---- defaults -------------------------------------------------------------------

    #[test]
    fn defaults_are_as_documented() {
        let c = Config::default();
        assert_eq!(c.broker, "memory://");
        assert_eq!(c.result_backend, None);
        assert_eq!(c.default_queue, "machinery_tasks");
        assert_eq!(c.results_expire_in, 3600);
        assert_eq!(c.visibility_timeout, 60);
        assert_eq!(c.max_deliveries, 10);
        assert_eq!(c.unregistered_requeues, 3);
        assert_eq!(c.retry_max_delay, 600);
        assert_eq!(c.started_after_ms, 10);
        assert_eq!(c.started_after(), Duration::from_millis(10));
        assert_eq!(c.max_message_bytes, 8 * 1024 * 1024);
        assert_eq!(c.redis.key_prefix, "machinery");
        assert_eq!(c.redis.connect_timeout_ms, 5000);
        assert_eq!(c.redis.response_timeout_ms, 5000);
        assert_eq!(c.redis.fetch_batch, 64);
        assert_eq!(c.redis.block_ms, 5000);
        assert_eq!(c.redis, RedisConfig::default());
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn result_backend_url_falls_back_to_broker() {
        let mut c = Config {
            broker: "redis://h:6379/0".to_owned(),
            ..Config::default()
        };
        assert_eq!(c.result_backend_url(), "redis://h:6379/0");
        c.result_backend = Some("redis://other:6379/1".to_owned());
        assert_eq!(c.result_backend_url(), "redis://other:6379/1");
    }

    #[test]
    fn results_ttl_is_none_for_zero() {
        let mut c = Config::default();
        assert_eq!(c.results_ttl(), Some(Duration::from_secs(3600)));
        c.results_expire_in = 0;
        assert_eq!(c.results_ttl(), None);
        c.results_expire_in = 1;
        assert_eq!(c.results_ttl(), Some(Duration::from_secs(1)));
    }

    // ---- environment ----------------------------------------------------------------

    #[test]
    fn every_variable_is_read() {
        let c = env(&[
            ("MACHINERY_BROKER", "redis://localhost:6379/0"),
            ("MACHINERY_RESULT_BACKEND", "rediss://db:6380/2"),
            ("MACHINERY_DEFAULT_QUEUE", "emails"),
            ("MACHINERY_RESULTS_EXPIRE_IN", "0"),
            ("MACHINERY_VISIBILITY_TIMEOUT", "30"),
            ("MACHINERY_MAX_DELIVERIES", "5"),
            ("MACHINERY_UNREGISTERED_REQUEUES", "0"),
            ("MACHINERY_RETRY_MAX_DELAY", "120"),
            ("MACHINERY_MAX_MESSAGE_BYTES", "1024"),
            ("MACHINERY_STARTED_AFTER_MS", "0"),
            ("MACHINERY_REDIS_KEY_PREFIX", "app:v2"),
            ("MACHINERY_REDIS_CONNECT_TIMEOUT_MS", "250"),
            ("MACHINERY_REDIS_RESPONSE_TIMEOUT_MS", "0"),
            ("MACHINERY_REDIS_FETCH_BATCH", "1"),
            ("MACHINERY_REDIS_BLOCK_MS", "1"),
        ])
        .expect("valid");
        assert_eq!(c.broker, "redis://localhost:6379/0");
        assert_eq!(c.result_backend.as_deref(), Some("rediss://db:6380/2"));
        assert_eq!(c.result_backend_url(), "rediss://db:6380/2");
        assert_eq!(c.default_queue, "emails");
        assert_eq!(c.results_expire_in, 0);
        assert_eq!(c.results_ttl(), None);
        assert_eq!(c.visibility_timeout, 30);
        assert_eq!(c.max_deliveries, 5);
        assert_eq!(c.unregistered_requeues, 0);
        assert_eq!(c.retry_max_delay, 120);
        assert_eq!(c.max_message_bytes, 1024);
        assert_eq!(c.started_after_ms, 0);
        assert_eq!(c.started_after(), Duration::ZERO);
        assert_eq!(c.redis.key_prefix, "app:v2");
        assert_eq!(c.redis.connect_timeout_ms, 250);
        assert_eq!(c.redis.response_timeout_ms, 0);
        assert_eq!(c.redis.fetch_batch, 1);
        assert_eq!(c.redis.block_ms, 1);
    }

    #[test]
    fn every_key_has_a_distinct_env_name_derived_from_its_yaml_name() {
        for key in Key::ALL {
            let derived = format!("{ENV_PREFIX}{}", key.yaml().replace('.', "_")).to_uppercase();
            assert_eq!(key.env(), derived);
        }
        let mut names = Key::ALL.map(Key::env).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Key::ALL.len());
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let c = env(&[
            ("MACHINERY_BROKER", ""),
            ("MACHINERY_VISIBILITY_TIMEOUT", ""),
            ("MACHINERY_BROKR", ""),
        ])
        .expect("valid");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_variable_is_an_error_listing_valid_names() {
        let (key, reason) = config_error(env(&[("MACHINERY_BROKR", "memory://")]));
        assert_eq!(key, "MACHINERY_BROKR");
        assert!(reason.contains("unknown variable"), "{reason}");
        assert!(
            reason.contains("did you mean `MACHINERY_BROKER`?"),
            "{reason}"
        );
        for k in Key::ALL {
            assert!(reason.contains(k.env()), "{reason} lacks {}", k.env());
        }
    }

    #[test]
    fn unknown_variable_far_from_any_name_has_no_suggestion() {
        let (key, reason) = config_error(env(&[("MACHINERY_SOMETHING_ELSE", "1")]));
        assert_eq!(key, "MACHINERY_SOMETHING_ELSE");
        assert!(!reason.contains("did you mean"), "{reason}");
    }

    #[test]
    fn machinery_log_and_foreign_variables_are_ignored() {
        let c = env(&[
            ("MACHINERY_LOG", "debug"),
            ("PATH", "/usr/bin"),
            ("machinery_broker", "nonsense"),
            ("REDIS_URL", "redis://x"),
        ])
        .expect("valid");
        assert_eq!(c, Config::default());
        // Only exactly MACHINERY_LOG is reserved.
        let (key, _) = config_error(env(&[("MACHINERY_LOGS", "debug")]));
        assert_eq!(key, "MACHINERY_LOGS");
    }

    #[test]
    fn env_errors_name_the_variable_and_say_what_is_accepted() {
        let (key, reason) = config_error(env(&[("MACHINERY_RESULTS_EXPIRE_IN", "abc")]));
        assert_eq!(key, "MACHINERY_RESULTS_EXPIRE_IN");
        assert_eq!(
            reason,
            "expected a whole number of seconds, 0 = keep forever; got `abc`"
        );
        let message = Error::config(key, reason).to_string();
        assert!(message.contains("MACHINERY_RESULTS_EXPIRE_IN"), "{message}");
    }

    #[test]
    fn numbers_reject_signs_fractions_units_and_out_of_range() {
        let cases = [
            ("MACHINERY_VISIBILITY_TIMEOUT", "0", "at least 1"),
            ("MACHINERY_VISIBILITY_TIMEOUT", "-5", "got `-5`"),
            ("MACHINERY_VISIBILITY_TIMEOUT", "1.5", "got `1.5`"),
            ("MACHINERY_VISIBILITY_TIMEOUT", "30s", "got `30s`"),
            ("MACHINERY_MAX_DELIVERIES", "0", "at least 2"),
            ("MACHINERY_MAX_DELIVERIES", "1", "at least 2"),
            (
                "MACHINERY_MAX_DELIVERIES",
                "4294967296",
                "at most 4294967295",
            ),
            ("MACHINERY_UNREGISTERED_REQUEUES", "4294967296", "at most"),
            ("MACHINERY_RETRY_MAX_DELAY", "0", "at least 1"),
            ("MACHINERY_MAX_MESSAGE_BYTES", "1023", "at least 1024"),
            ("MACHINERY_REDIS_FETCH_BATCH", "0", "1 to 1000"),
            ("MACHINERY_REDIS_FETCH_BATCH", "1001", "1 to 1000"),
            ("MACHINERY_REDIS_BLOCK_MS", "0", "at least 1"),
            ("MACHINERY_REDIS_CONNECT_TIMEOUT_MS", "soon", "milliseconds"),
            ("MACHINERY_STARTED_AFTER_MS", "10ms", "0 = every task"),
            (
                "MACHINERY_RESULTS_EXPIRE_IN",
                "99999999999999999999999",
                "at most 9223372036854775",
            ),
            (
                "MACHINERY_REDIS_BLOCK_MS",
                "9223372036854775808",
                "at most 9223372036854775807",
            ),
        ];
        for (name, value, needle) in cases {
            let (key, reason) = config_error(env(&[(name, value)]));
            assert_eq!(key, name);
            assert!(reason.contains(needle), "{name}={value}: {reason}");
            assert!(reason.starts_with("expected "), "{name}={value}: {reason}");
        }
    }

    #[test]
    fn numbers_accept_surrounding_whitespace_and_largest_values() {
        let c = env(&[
            ("MACHINERY_VISIBILITY_TIMEOUT", " 45\n"),
            ("MACHINERY_MAX_DELIVERIES", "4294967295"),
            ("MACHINERY_RESULTS_EXPIRE_IN", "9223372036854775"),
        ])
        .expect("valid");
        assert_eq!(c.visibility_timeout, 45);
        assert_eq!(c.max_deliveries, u32::MAX);
        assert_eq!(c.results_expire_in, MAX_SECONDS);
    }

    #[test]
    fn bad_urls_list_schemes_and_are_redacted() {
        for url in [
            "http://h",
            "localhost:6379",
            "redis:/h",
            "REDIS://h",
            "amqp://guest:hunter2@h:5672",
        ] {
            let (key, reason) = config_error(env(&[("MACHINERY_BROKER", url)]));
            assert_eq!(key, "MACHINERY_BROKER");
            assert!(
                reason.contains("memory, redis, rediss, redis+unix, unix"),
                "{reason}"
            );
            assert!(!reason.contains("hunter2"), "password leaked: {reason}");
        }
        let (key, reason) = config_error(env(&[(
            "MACHINERY_RESULT_BACKEND",
            "postgres://u:hunter2@db/x",
        )]));
        assert_eq!(key, "MACHINERY_RESULT_BACKEND");
        assert!(reason.contains("got `postgres://u:***@db/x`"), "{reason}");
    }

    #[test]
    fn every_scheme_is_accepted() {
        for url in [
            "memory://",
            "redis://h:6379/0",
            "rediss://u:p@h:6380/1",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock?db=2",
        ] {
            let c = env(&[("MACHINERY_BROKER", url), ("MACHINERY_RESULT_BACKEND", url)])
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(c.broker, url);
            assert_eq!(c.result_backend_url(), url);
        }
    }

    #[test]
    fn key_prefix_and_queue_rules() {
        for bad in ["", " ", "a b", "{app}", "app}", "tab\there"] {
            let result = Config::default()
                .apply_vars(vars(&[("MACHINERY_REDIS_KEY_PREFIX", bad)]))
                .and_then(|()| {
                    // "" is skipped as unset, so also check it through validate().
                    let mut c = Config::default();
                    c.redis.key_prefix = bad.to_owned();
                    c.validate()
                });
            let (key, reason) = config_error(result);
            assert!(
                key == "MACHINERY_REDIS_KEY_PREFIX" || key == "redis.key_prefix",
                "{key}"
            );
            assert!(reason.contains("`{` or `}`"), "{reason}");
        }
        let (key, _) = config_error(env(&[("MACHINERY_DEFAULT_QUEUE", "my queue")]));
        assert_eq!(key, "MACHINERY_DEFAULT_QUEUE");
    }

    #[test]
    fn apply_vars_changes_nothing_on_error() {
        let mut c = Config::default();
        let result = c.apply_vars(vars(&[
            ("MACHINERY_BROKER", "redis://h"),
            ("MACHINERY_VISIBILITY_TIMEOUT", "0"),
        ]));
        assert!(result.is_err());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn apply_vars_reports_the_first_error_in_name_order() {
        let (key, _) = config_error(env(&[
            ("MACHINERY_VISIBILITY_TIMEOUT", "x"),
            ("MACHINERY_BROKER", "x"),
        ]));
        assert_eq!(key, "MACHINERY_BROKER");
    }

    #[test]
    fn apply_vars_last_repeated_value_wins() {
        let c = env(&[
            ("MACHINERY_DEFAULT_QUEUE", "z_first"),
            ("MACHINERY_DEFAULT_QUEUE", "a_second"),
        ])
        .expect("valid");
        assert_eq!(c.default_queue, "a_second");
    }

    #[test]
    fn apply_vars_overlays_existing_values() {
        let mut c =
            Config::from_yaml_str("default_queue: from_yaml\nmax_deliveries: 7").expect("valid");
        c.apply_vars(vars(&[("MACHINERY_DEFAULT_QUEUE", "from_env")]))
            .expect("valid");
        assert_eq!(c.default_queue, "from_env");
        assert_eq!(c.max_deliveries, 7);
    }

    #[test]
    fn apply_env_reads_the_process_environment_without_panicking() {
        // The test binary's environment must not be mutated (tests run in parallel);
        // with no MACHINERY_* set this is the defaults, otherwise whatever they say.
        let set = std::env::vars_os()
            .any(|(k, _)| k.to_string_lossy().starts_with(ENV_PREFIX) && k != ENV_IGNORED);
        if !set {
            assert_eq!(Config::from_env().expect("valid"), Config::default());
        }
    }

    // ---- YAML -----------------------------------------------------------------------

    #[test]
    fn yaml_sets_every_key() {
        let c = Config::from_yaml_str(
            "broker: redis://:pw@localhost:6379/0\n\
             result_backend: redis://localhost:6379/1\n\
             default_queue: emails\n\
             results_expire_in: 0\n\
             visibility_timeout: 30\n\
             max_deliveries: 5\n\
             unregistered_requeues: 0\n\
             retry_max_delay: 120\n\
             max_message_bytes: 2048\n\
             started_after_ms: 250\n\
             redis:\n\
             \x20 key_prefix: app\n\
             \x20 connect_timeout_ms: 100\n\
             \x20 response_timeout_ms: 200\n\
             \x20 fetch_batch: 8\n\
             \x20 block_ms: 250\n",
        )
        .expect("valid");
        assert_eq!(c.broker, "redis://:pw@localhost:6379/0");
        assert_eq!(
            c.result_backend.as_deref(),
            Some("redis://localhost:6379/1")
        );
        assert_eq!(c.default_queue, "emails");
        assert_eq!(c.results_expire_in, 0);
        assert_eq!(c.visibility_timeout, 30);
        assert_eq!(c.max_deliveries, 5);
        assert_eq!(c.unregistered_requeues, 0);
        assert_eq!(c.retry_max_delay, 120);
        assert_eq!(c.max_message_bytes, 2048);
        assert_eq!(c.started_after_ms, 250);
        assert_eq!(
            c.redis,
            RedisConfig {
                key_prefix: "app".to_owned(),
                connect_timeout_ms: 100,
                response_timeout_ms: 200,
                fetch_batch: 8,
                block_ms: 250,
            }
        );
    }

    #[test]
    fn yaml_fields_are_all_optional() {
        for text in [
            "",
            "# nothing\n",
            "---\n",
            "{}",
            "redis:\n",
            "redis: {}",
            "broker: ~",
        ] {
            let c = Config::from_yaml_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(c, Config::default(), "{text:?}");
        }
        let c = Config::from_yaml_str("redis:\n  block_ms: 5\n").expect("valid");
        assert_eq!(c.redis.block_ms, 5);
        assert_eq!(c.redis.key_prefix, "machinery");
        assert_eq!(c.broker, "memory://");
    }

    #[test]
    fn yaml_numbers_may_be_quoted() {
        let c = Config::from_yaml_str("visibility_timeout: \"45\"").expect("valid");
        assert_eq!(c.visibility_timeout, 45);
    }

    #[test]
    fn yaml_unknown_key_is_an_error_naming_it() {
        let (key, reason) = config_error(Config::from_yaml_str("brokr: memory://"));
        assert_eq!(key, "brokr");
        assert!(reason.contains("unknown key"), "{reason}");
        assert!(reason.contains("did you mean `broker`?"), "{reason}");
        assert!(reason.contains("redis"), "{reason}");

        let (key, reason) = config_error(Config::from_yaml_str("redis:\n  fetch_bach: 3\n"));
        assert_eq!(key, "redis.fetch_bach");
        assert!(reason.contains("did you mean `fetch_batch`?"), "{reason}");
        assert!(reason.contains("key_prefix"), "{reason}");
        assert!(!reason.contains("broker"), "{reason}");

        // Redis settings belong in the `redis:` mapping, not at the top level.
        let (key, _) = config_error(Config::from_yaml_str("key_prefix: app"));
        assert_eq!(key, "key_prefix");
        let (key, reason) = config_error(Config::from_yaml_str("redis.key_prefix: app"));
        assert_eq!(key, "redis.key_prefix");
        assert!(reason.contains("`redis: { key_prefix: … }`"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("redis_block_ms: 5"));
        assert_eq!(key, "redis_block_ms");
        assert!(reason.contains("`redis: { block_ms: … }`"), "{reason}");
        // Nor do top-level settings go in `redis:`.
        let (key, _) = config_error(Config::from_yaml_str("redis:\n  broker: memory://\n"));
        assert_eq!(key, "redis.broker");
        // Keys are case-sensitive; the suggestion helps.
        let (key, reason) = config_error(Config::from_yaml_str("Broker: memory://"));
        assert_eq!(key, "Broker");
        assert!(reason.contains("did you mean `broker`?"), "{reason}");
        // A null value does not hide a typo.
        let (key, _) = config_error(Config::from_yaml_str("brokr:"));
        assert_eq!(key, "brokr");
    }

    #[test]
    fn yaml_value_errors_use_the_yaml_key() {
        let (key, reason) = config_error(Config::from_yaml_str("results_expire_in: abc"));
        assert_eq!(key, "results_expire_in");
        assert_eq!(
            reason,
            "expected a whole number of seconds, 0 = keep forever; got `abc`"
        );
        let (key, reason) = config_error(Config::from_yaml_str("redis:\n  key_prefix: 'a b'"));
        assert_eq!(key, "redis.key_prefix");
        assert!(reason.contains("got `a b`"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("visibility_timeout: -1"));
        assert_eq!(key, "visibility_timeout");
        assert!(reason.contains("got `-1`"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("visibility_timeout: 1.5"));
        assert_eq!(key, "visibility_timeout");
        assert!(reason.contains("1.5"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("visibility_timeout: true"));
        assert_eq!(key, "visibility_timeout");
        assert!(reason.contains("boolean"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("max_deliveries: [1, 2]"));
        assert_eq!(key, "max_deliveries");
        assert!(reason.contains("sequence"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("max_deliveries: 0"));
        assert_eq!(key, "max_deliveries");
        assert!(reason.contains("at least 2; got `0`"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str(
            "max_message_bytes: 99999999999999999999",
        ));
        assert_eq!(key, "max_message_bytes");
        assert!(reason.contains("at most"), "{reason}");
    }

    #[test]
    fn yaml_text_fields_reject_other_kinds() {
        let (key, reason) = config_error(Config::from_yaml_str("default_queue: 2024"));
        assert_eq!(key, "default_queue");
        assert!(reason.contains("the integer `2024`"), "{reason}");
        assert!(reason.contains("quote it"), "{reason}");
        let (key, reason) = config_error(Config::from_yaml_str("broker: {a: 1}"));
        assert_eq!(key, "broker");
        assert!(reason.contains("mapping"), "{reason}");
        let c = Config::from_yaml_str("default_queue: '2024'").expect("valid");
        assert_eq!(c.default_queue, "2024");
    }

    #[test]
    fn yaml_redis_must_be_a_mapping() {
        let (key, reason) = config_error(Config::from_yaml_str("redis: localhost"));
        assert_eq!(key, "redis");
        assert!(reason.contains("expected a mapping"), "{reason}");
        assert!(reason.contains("key_prefix"), "{reason}");
    }

    #[test]
    fn yaml_bad_url_is_redacted() {
        let (key, reason) =
            config_error(Config::from_yaml_str("broker: http://user:hunter2@h:1/0"));
        assert_eq!(key, "broker");
        assert!(
            reason.contains("memory, redis, rediss, redis+unix, unix"),
            "{reason}"
        );
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(reason.contains("http://user:***@h:1/0"), "{reason}");
    }

    #[test]
    fn yaml_syntax_errors_are_config_file_errors_without_the_text() {
        let (path, reason) = file_error(Config::from_yaml_str(
            "broker: redis://:hunter2@h\n  bad: [\n",
        ));
        assert_eq!(path, INLINE_YAML);
        assert!(!reason.is_empty());
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn yaml_top_level_must_be_a_mapping() {
        let (path, reason) = file_error(Config::from_yaml_str("- broker\n- memory://\n"));
        assert_eq!(path, INLINE_YAML);
        assert!(reason.contains("expected a mapping"), "{reason}");
        let (_, reason) = file_error(Config::from_yaml_str("just text"));
        assert!(reason.contains("expected a mapping"), "{reason}");
    }

    #[test]
    fn yaml_duplicate_keys_are_rejected() {
        let result = Config::from_yaml_str("broker: memory://\nbroker: redis://h\n");
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn yaml_anchors_and_aliases_work() {
        let c = Config::from_yaml_str("broker: &url redis://h:6379/0\nresult_backend: *url\n")
            .expect("valid");
        assert_eq!(c.result_backend_url(), "redis://h:6379/0");
    }

    #[test]
    fn yaml_file_then_env() {
        let path = fixture("config_full.yaml");
        let mut c = Config::default();
        let text = std::fs::read_to_string(&path).expect("fixture exists");
        c.apply_yaml(&text, "fixture").expect("valid");
        c.apply_vars(vars(&[
            ("MACHINERY_DEFAULT_QUEUE", "from_env"),
            ("MACHINERY_REDIS_BLOCK_MS", "7"),
        ]))
        .expect("valid");
        c.validate().expect("valid");
        assert_eq!(c.default_queue, "from_env");
        assert_eq!(c.redis.block_ms, 7);
        assert_eq!(c.broker, "redis://:s3cret@127.0.0.1:6379/0");
        assert_eq!(c.redis.key_prefix, "fixture");
        assert_eq!(c.results_expire_in, 86400);
    }

    #[test]
    fn from_yaml_reads_a_file() {
        let set = std::env::vars_os()
            .any(|(k, _)| k.to_string_lossy().starts_with(ENV_PREFIX) && k != ENV_IGNORED);
        if set {
            return; // The environment would override the file: covered by yaml_file_then_env.
        }
        let c = Config::from_yaml(fixture("config_full.yaml")).expect("valid");
        assert_eq!(c.broker, "redis://:s3cret@127.0.0.1:6379/0");
        assert_eq!(c.result_backend, None);
        assert_eq!(c.default_queue, "fixture_tasks");
        assert_eq!(c.results_expire_in, 86400);
        assert_eq!(c.redis.key_prefix, "fixture");
        assert_eq!(c.redis.fetch_batch, 16);
    }

    #[test]
    fn from_yaml_missing_file_names_the_path() {
        let path = fixture("does_not_exist.yaml");
        let (shown, reason) = file_error(Config::from_yaml(&path));
        assert_eq!(shown, path.display().to_string());
        assert!(!reason.is_empty());
        let message = Error::ConfigFile {
            path: shown,
            reason,
        }
        .to_string();
        assert!(message.contains("does_not_exist.yaml"), "{message}");
    }

    #[test]
    fn from_yaml_unknown_key_in_a_file() {
        let (key, _) = config_error(Config::from_yaml(fixture("config_typo.yaml")));
        assert_eq!(key, "redis.keyprefix");
    }

    // ---- validate -------------------------------------------------------------------

    #[test]
    fn validate_names_yaml_keys() {
        type Case = (fn(&mut Config), &'static str, &'static str);
        let cases: [Case; 13] = [
            (|c| c.broker = "nope".into(), "broker", "scheme"),
            (
                |c| c.result_backend = Some("ftp://x".into()),
                "result_backend",
                "scheme",
            ),
            (
                |c| c.default_queue = String::new(),
                "default_queue",
                "queue",
            ),
            (
                |c| c.visibility_timeout = 0,
                "visibility_timeout",
                "at least 1",
            ),
            (|c| c.max_deliveries = 1, "max_deliveries", "at least 2"),
            (|c| c.retry_max_delay = 0, "retry_max_delay", "at least 1"),
            (
                |c| c.max_message_bytes = 1023,
                "max_message_bytes",
                "at least 1024",
            ),
            (
                |c| c.redis.key_prefix = "{x}".into(),
                "redis.key_prefix",
                "`{`",
            ),
            (
                |c| c.redis.fetch_batch = 0,
                "redis.fetch_batch",
                "1 to 1000",
            ),
            (|c| c.redis.block_ms = 0, "redis.block_ms", "at least 1"),
            (
                |c| c.results_expire_in = u64::MAX,
                "results_expire_in",
                "at most",
            ),
            (
                |c| c.redis.connect_timeout_ms = u64::MAX,
                "redis.connect_timeout_ms",
                "at most",
            ),
            (
                |c| c.started_after_ms = u64::MAX,
                "started_after_ms",
                "at most",
            ),
        ];
        for (mutate, want_key, needle) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            let (key, reason) = config_error(c.validate());
            assert_eq!(key, want_key);
            assert!(reason.contains(needle), "{want_key}: {reason}");
        }
    }

    #[test]
    fn validate_accepts_edge_values() {
        let c = Config {
            results_expire_in: 0,
            unregistered_requeues: 0,
            visibility_timeout: 1,
            max_message_bytes: 1024,
            redis: RedisConfig {
                connect_timeout_ms: 0,
                key_prefix: "a:b-c_d.e".into(),
                ..RedisConfig::default()
            },
            ..Config::default()
        };
        c.validate().expect("valid");
    }

    // ---- redaction ------------------------------------------------------------------

    #[test]
    fn redact_url_examples() {
        let cases = [
            ("redis://user:secret@h:1/0", "redis://user:***@h:1/0"),
            ("redis://:secret@h", "redis://:***@h"),
            (
                "rediss://:secret@h:6380/2?protocol=resp3",
                "rediss://:***@h:6380/2?protocol=resp3",
            ),
            ("redis://secret@h", "redis://***@h"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://user:@h", "redis://user:@h"),
            ("memory://", "memory://"),
            ("", ""),
            ("redis://:p@ss:w/rd#x@h:1/0", "redis://:***@h:1/0"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=secret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "unix:///run/redis@6379.sock?password=secret#f",
                "unix:///run/redis@6379.sock?password=***#f",
            ),
            ("user:secret@h:6379", "user:***@h:6379"),
            ("redis://h/0?pass=", "redis://h/0?pass="),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn redact_url_never_shows_the_password() {
        for url in [
            "redis://u:hunter2@h",
            "redis://:hunter2@h:1/0",
            "redis://hunter2@h",
            "redis://:hunt/er2@h",
            "redis://:hunt?er2@h",
            "redis://:hunt#er2@h",
            "redis://:hunt@er2@h",
            "redis+unix:///s.sock?pass=hunter2",
            "redis+unix:///s.sock?PASSWORD=hunter2&db=0",
            "hunter2@h",
            ":hunter2@h",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("hunter2"), "{url} -> {redacted}");
            assert!(!redacted.contains("er2"), "{url} -> {redacted}");
        }
    }

    #[test]
    fn debug_never_shows_a_password() {
        let c = Config::from_yaml_str(
            "broker: redis://admin:hunter2@h:6379/0\n\
             result_backend: redis+unix:///run/r.sock?pass=hunter3\n",
        )
        .expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("redis://admin:***@h:6379/0"), "{shown}");
        assert!(shown.contains("pass=***"), "{shown}");
        assert!(shown.contains("machinery_tasks"), "{shown}");
        assert!(shown.contains("key_prefix"), "{shown}");
        let pretty = format!("{c:#?}");
        assert!(!pretty.contains("hunter2"), "{pretty}");
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("brokr", "broker"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
