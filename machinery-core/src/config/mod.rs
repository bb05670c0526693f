//! Server configuration: engines, queues, time-to-live values and limits.
//!
//! A [`Config`] starts from its defaults, then takes values from a YAML file and from
//! `MACHINERY_*` environment variables, the environment winning over the file. Every
//! constructor validates the result, so a `Config` obtained from one is ready to use.
//! The keys are the fields of [`Config`] (a serde derive with `deny_unknown_fields`)
//! plus one mapping per linked engine crate ([`EngineSection`]); a variable's name is
//! `MACHINERY_` and the YAML path in upper case, with `_` for the dot.
//!
//! | YAML key | environment variable | default | accepted |
//! |---|---|---|---|
//! | `broker` | `MACHINERY_BROKER` | `memory://` | URL whose scheme is `memory` or one of a linked engine's (`redis`, `rediss`, `redis+unix`, `unix` with machinery-redis) |
//! | `result_backend` | `MACHINERY_RESULT_BACKEND` | the broker | same as `broker` |
//! | `default_queue` | `MACHINERY_DEFAULT_QUEUE` | `machinery_tasks` | non-empty, no whitespace |
//! | `results_expire_in` | `MACHINERY_RESULTS_EXPIRE_IN` | `1h` | duration, `0` = keep forever |
//! | `visibility_timeout` | `MACHINERY_VISIBILITY_TIMEOUT` | `60s` | duration, at least `1s` |
//! | `max_deliveries` | `MACHINERY_MAX_DELIVERIES` | `10` | at least 2 |
//! | `unregistered_requeues` | `MACHINERY_UNREGISTERED_REQUEUES` | `3` | `0` = dead-letter at once |
//! | `retry_max_delay` | `MACHINERY_RETRY_MAX_DELAY` | `10m` | duration, at least `1s` |
//! | `max_message_bytes` | `MACHINERY_MAX_MESSAGE_BYTES` | `8388608` (8 MiB) | at least 1024 |
//! | `started_after_ms` | `MACHINERY_STARTED_AFTER_MS` | `10ms` | duration, bare number = milliseconds, `0` = every task |
//! | `result_extended` | `MACHINERY_RESULT_EXTENDED` | `true` | `true` or `false` (also `on`/`off`, `yes`/`no`, `1`/`0`) |
//! | `worker_heartbeat` | `MACHINERY_WORKER_HEARTBEAT` | `5s` | duration, at least `1s` |
//! | `stats` | `MACHINERY_STATS` | `true` | `true` or `false` (as `result_extended`) |
//! | `stats_window` | `MACHINERY_STATS_WINDOW` | `24h` | duration, at least `1m` |
//! | `revoke_grace` | `MACHINERY_REVOKE_GRACE` | `10s` | duration, `0` = abort at once |
//! | `progress_interval` | `MACHINERY_PROGRESS_INTERVAL` | `250ms` | duration, at least `10ms` |
//! | `rate_limits` | `MACHINERY_RATE_LIMITS` | none | mapping of queue → rate (`{emails: 100/s}`); in the environment `emails=100/s,sms=10/m` |
//! | `redis.key_prefix` | `MACHINERY_REDIS_KEY_PREFIX` | `machinery` | non-empty, no whitespace, `{` or `}` |
//! | `redis.connect_timeout_ms` | `MACHINERY_REDIS_CONNECT_TIMEOUT_MS` | `5s` | duration, bare number = milliseconds, at least `1ms` |
//! | `redis.response_timeout_ms` | `MACHINERY_REDIS_RESPONSE_TIMEOUT_MS` | `5s` | duration, bare number = milliseconds, at least `1ms` |
//! | `redis.fetch_batch` | `MACHINERY_REDIS_FETCH_BATCH` | `64` | 1 to 1000 |
//! | `redis.block_ms` | `MACHINERY_REDIS_BLOCK_MS` | `5s` | duration, bare number = milliseconds, at least `1ms` |
//!
//! The `redis` rows exist when `machinery-redis` is linked: it registers that section
//! ([`machinery_redis::RedisConfig`](https://docs.rs/machinery-redis)) and its URL
//! schemes. Another engine crate adds its own mapping and schemes the same way.
//!
//! **Durations** are written one way everywhere (here, `@every` schedules and
//! `#[task(timeout = …)]`): `500ms`, `2s`, `5m`, `1h30m`, `1d` (see [`parse_duration`]),
//! or a bare whole number of seconds. Keys whose name ends in `_ms` keep their
//! historical meaning: a bare number there counts milliseconds (`block_ms: 250`), while
//! `block_ms: 2s` is two seconds. A duration is whole milliseconds and at most
//! `i64::MAX` milliseconds, the unit Redis uses for expiries and blocking reads, so no
//! engine overflows converting it. Numbers are whole numbers; YAML may quote them.
//!
//! An empty environment variable counts as unset, as does a YAML key with no value; an
//! unknown `MACHINERY_*` variable or YAML key is an error naming it, with the closest
//! valid name, so a typo is never silently ignored (`MACHINERY_LOG` is reserved for the
//! examples and ignored here). Errors name the key as written: the YAML path
//! (`redis.block_ms`) or the variable that set the value. Passwords in URLs are never
//! shown ([`redact_url`]).
//!
//! A YAML file looks like this:
//!
//! ```yaml
//! broker: redis://:secret@localhost:6379/0
//! results_expire_in: 1d
//! redis:
//!   key_prefix: myapp
//!   block_ms: 2s
//! ```

mod duration;
mod load;
mod rates;
mod redact;
mod section;
mod switch;
mod whole;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use duration::{MAX_DURATION, format_duration, parse_duration, serde_duration};
pub use redact::redact_url;
pub use section::{EngineSection, FieldError, Section};
pub use switch::serde_switch;
pub use whole::{Whole, serde_whole};

use crate::error::{Error, Result};
use section::Sections;

/// Source name used in errors of [`Config::from_yaml_str`].
const INLINE_YAML: &str = "<YAML string>";

/// Configuration of a server: engines, queues, TTLs.
///
/// Build one with [`Config::from_env`], [`Config::from_yaml`],
/// [`Config::from_yaml_str`] or [`Config::from_sources`], or start from
/// [`Config::default`] and set fields. The [module documentation](self) lists every key
/// with its environment variable. Engine settings (the `redis:` mapping) are read with
/// [`Config::section`] and set with [`Config::section_mut`].
///
/// `Debug` never shows a password: URLs are printed through [`redact_url`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use machinery_core::Config;
///
/// let config = Config::from_yaml_str("broker: memory://\nresults_expire_in: 0\nvisibility_timeout: 2m")?;
/// assert_eq!(config.result_backend_url(), "memory://");
/// assert_eq!(config.results_ttl(), None);
/// assert_eq!(config.visibility_timeout, Duration::from_secs(120));
/// assert_eq!(config.default_queue, "machinery_tasks");
/// # Ok::<(), machinery_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// How long a final state (SUCCESS, FAILURE) is kept from its write, and a chord's
    /// bookkeeping from its callback's final state (`results_expire_in`,
    /// `MACHINERY_RESULTS_EXPIRE_IN`); default 1 hour; zero keeps them forever
    /// ([`Config::results_ttl`]). Non-final states never expire.
    #[serde(deserialize_with = "duration::seconds")]
    pub results_expire_in: Duration,
    /// How long a delivery stays invisible to other workers without a heartbeat
    /// (`visibility_timeout`, `MACHINERY_VISIBILITY_TIMEOUT`); default 60 s; at least 1 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub visibility_timeout: Duration,
    /// A message delivered more times than this (its workers crashed) goes to the
    /// dead-letter queue (`max_deliveries`, `MACHINERY_MAX_DELIVERIES`); default 10;
    /// at least 2: a message running beside one that kills the worker is charged that
    /// delivery once (it then runs alone), which must not dead-letter it.
    #[serde(deserialize_with = "serde_whole::deserialize")]
    pub max_deliveries: u32,
    /// Times a message naming a task no worker knows is requeued before it is
    /// dead-lettered (`unregistered_requeues`, `MACHINERY_UNREGISTERED_REQUEUES`);
    /// default 3.
    #[serde(deserialize_with = "serde_whole::deserialize")]
    pub unregistered_requeues: u32,
    /// Cap of the Fibonacci retry backoff (`retry_max_delay`,
    /// `MACHINERY_RETRY_MAX_DELAY`); default 10 minutes; at least 1 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub retry_max_delay: Duration,
    /// Largest encoded message the broker accepts, in bytes (`max_message_bytes`,
    /// `MACHINERY_MAX_MESSAGE_BYTES`); default 8 MiB; at least 1024.
    #[serde(deserialize_with = "serde_whole::deserialize")]
    pub max_message_bytes: usize,
    /// A task still running this long after it started is recorded as STARTED
    /// (`started_after_ms`, `MACHINERY_STARTED_AFTER_MS`, where a bare number counts
    /// milliseconds); default 10 ms. A task that finishes sooner goes from PENDING
    /// straight to its final state, which spares the result backend one write per task
    /// (its STARTED could only have been seen for a few milliseconds). Zero records
    /// STARTED for every task before it runs.
    #[serde(rename = "started_after_ms", deserialize_with = "duration::millis")]
    pub started_after: Duration,
    /// Whether every task state also keeps the task's arguments, headers and argument
    /// schema, so that `task show` can print them after the message is gone
    /// (`result_extended`, `MACHINERY_RESULT_EXTENDED`); default true. Off, states hold
    /// only the outcome, which saves the copy of the arguments per state written.
    #[serde(deserialize_with = "serde_switch::deserialize")]
    pub result_extended: bool,
    /// How often a worker rewrites its record in the worker registry
    /// (`worker_heartbeat`, `MACHINERY_WORKER_HEARTBEAT`); default 5 s; at least 1 s. A
    /// record not rewritten for three periods disappears: that is how long a worker
    /// that died without stopping stays listed.
    #[serde(deserialize_with = "duration::seconds")]
    pub worker_heartbeat: Duration,
    /// Whether workers record statistics: per-minute counts and run and queue-wait
    /// histograms per queue and task, and the recent failures (`stats`,
    /// `MACHINERY_STATS`); default true. Workers count in memory and write the counts
    /// to the broker about once a second.
    #[serde(deserialize_with = "serde_switch::deserialize")]
    pub stats: bool,
    /// How long the broker keeps statistics and the list of recent failures
    /// (`stats_window`, `MACHINERY_STATS_WINDOW`); default 24 hours; at least 1 minute.
    #[serde(deserialize_with = "duration::seconds")]
    pub stats_window: Duration,
    /// How long a worker lets a revoked task that is running stop by itself (it sees
    /// [`TaskContext::cancelled`](crate::TaskContext::cancelled)) before it drops its
    /// future (`revoke_grace`, `MACHINERY_REVOKE_GRACE`); default 10 s; zero drops it at
    /// once. A blocking `fn` task cannot be stopped: after the grace its worker records
    /// REVOKED and frees the slot while the thread runs on.
    #[serde(deserialize_with = "duration::seconds")]
    pub revoke_grace: Duration,
    /// The shortest time between two progress writes of one running task
    /// (`progress_interval`, `MACHINERY_PROGRESS_INTERVAL`); default 250 ms; at least
    /// 10 ms. A worker writes the first value a task reports at once, then at most one
    /// value per interval (the newest, values in between are dropped), and always the
    /// last one before the task's final state: a task calling
    /// [`TaskContext::set_progress`](crate::TaskContext::set_progress) in a tight loop
    /// costs the result backend at most 1 / interval writes a second (4 by default).
    #[serde(deserialize_with = "duration::seconds")]
    pub progress_interval: Duration,
    /// Rate limits per queue (`rate_limits`, `MACHINERY_RATE_LIMITS`): at most so many
    /// task starts per period from that queue, across every worker (see
    /// [`RateLimit`](crate::RateLimit)); default none. YAML takes a mapping
    /// (`rate_limits: {emails: 100/s, sms: 10/m}`), the environment a list
    /// (`MACHINERY_RATE_LIMITS="emails=100/s,sms=10/m"`).
    #[serde(deserialize_with = "rates::deserialize")]
    pub rate_limits: std::collections::BTreeMap<String, crate::RateLimit>,
    /// The engine sections (`redis:`), by name.
    #[serde(skip)]
    pub(crate) sections: Sections,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: "memory://".to_owned(),
            result_backend: None,
            default_queue: "machinery_tasks".to_owned(),
            results_expire_in: Duration::from_secs(3600),
            visibility_timeout: Duration::from_secs(60),
            max_deliveries: 10,
            unregistered_requeues: 3,
            retry_max_delay: Duration::from_secs(600),
            max_message_bytes: 8 * 1024 * 1024,
            started_after: Duration::from_millis(10),
            result_extended: true,
            worker_heartbeat: Duration::from_secs(5),
            stats: true,
            stats_window: Duration::from_secs(24 * 3600),
            revoke_grace: Duration::from_secs(10),
            progress_interval: Duration::from_millis(250),
            rate_limits: std::collections::BTreeMap::new(),
            sections: Sections::default(),
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
            started_after,
            result_extended,
            worker_heartbeat,
            stats,
            stats_window,
            revoke_grace,
            progress_interval,
            rate_limits,
            sections,
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
            .field("started_after", started_after)
            .field("result_extended", result_extended)
            .field("worker_heartbeat", worker_heartbeat)
            .field("stats", stats)
            .field("stats_window", stats_window)
            .field("revoke_grace", revoke_grace)
            .field("progress_interval", progress_interval)
            .field("rate_limits", rate_limits)
            .field("sections", sections)
            .finish()
    }
}

impl Config {
    /// The defaults, overlaid with the `MACHINERY_*` environment variables, validated.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when one is unknown, holds an invalid
    /// value or is not UTF-8.
    pub fn from_env() -> Result<Config> {
        load::load(None, load::process_vars()?)
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
        let yaml = load::Yaml {
            text: &text,
            source: &shown,
        };
        load::load(Some(yaml), load::process_vars()?)
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
        Config::from_sources(Some(yaml), [])
    }

    /// The defaults, overlaid with the YAML text when given, then with `vars` as if
    /// they were the environment: what [`Config::from_yaml`] does, without a file or
    /// the process environment.
    ///
    /// Names not starting with `MACHINERY_`, the name `MACHINERY_LOG` and empty values
    /// are skipped. Errors about variables come in name order, whatever the order of
    /// `vars`; when a name repeats, its last value wins.
    ///
    /// # Errors
    ///
    /// As [`Config::from_yaml_str`]; [`Error::Config`] whose key is the variable name
    /// (`MACHINERY_RESULTS_EXPIRE_IN`) when the name is unknown (the reason lists the
    /// valid names) or its value is invalid (the reason says what is accepted).
    pub fn from_sources(
        yaml: Option<&str>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let yaml = yaml.map(|text| load::Yaml {
            text,
            source: INLINE_YAML,
        });
        load::load(yaml, vars.into_iter().collect())
    }

    /// The URL of the result backend: [`Config::result_backend`] when set, else the broker's.
    pub fn result_backend_url(&self) -> &str {
        self.result_backend.as_deref().unwrap_or(&self.broker)
    }

    /// How long task states are kept; `None` when they are kept forever
    /// (`results_expire_in` is zero).
    pub fn results_ttl(&self) -> Option<Duration> {
        Some(self.results_expire_in).filter(|ttl| !ttl.is_zero())
    }

    /// The settings of the engine section `T` (`RedisConfig` for `redis:`): as loaded
    /// or set with [`Config::section_mut`], else `T`'s defaults.
    pub fn section<T: EngineSection>(&self) -> T {
        self.sections
            .0
            .get(T::NAME)
            .and_then(|s| s.as_any().downcast_ref::<T>())
            .cloned()
            .unwrap_or_default()
    }

    /// The settings of the engine section `T`, to change them; starts from `T`'s
    /// defaults when the section is not set yet. Call [`Config::validate`] afterwards
    /// (every server constructor does).
    pub fn section_mut<T: EngineSection>(&mut self) -> &mut T {
        let slot = self
            .sections
            .0
            .entry(T::NAME)
            .or_insert_with(|| Box::new(T::default()));
        if !slot.as_any().is::<T>() {
            *slot = Box::new(T::default());
        }
        match slot.as_any_mut().downcast_mut::<T>() {
            Some(section) => section,
            // Unreachable: the slot was just made a `T`.
            None => unreachable!("engine section `{}` holds another type", T::NAME),
        }
    }

    /// The URL schemes accepted for the broker and the result backend: `memory` and
    /// those of every linked engine crate's [`EngineFactory`](crate::engine::EngineFactory).
    pub fn schemes() -> Vec<&'static str> {
        let mut schemes = vec!["memory"];
        for factory in inventory::iter::<crate::server::EngineFactory> {
            schemes.extend(factory.schemes.iter().copied());
        }
        schemes.sort_unstable();
        schemes.dedup();
        schemes
    }

    /// Checks every value against the rules in the [module documentation](self),
    /// engine sections included. Every constructor calls it; call it again after
    /// changing fields by hand.
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
            unregistered_requeues: _,
            retry_max_delay,
            max_message_bytes,
            started_after,
            result_extended: _,
            worker_heartbeat,
            stats: _,
            stats_window,
            revoke_grace,
            progress_interval,
            rate_limits: _,
            sections,
        } = self;
        check_url("broker", broker)?;
        if let Some(backend) = result_backend {
            check_url("result_backend", backend)?;
        }
        if default_queue.is_empty()
            || default_queue
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::config(
                "default_queue",
                format!(
                    "expected a non-empty queue name without whitespace; got `{}`",
                    default_queue.escape_debug()
                ),
            ));
        }
        check_duration(*results_expire_in, Duration::ZERO, "0 = keep forever")
            .map_err(|reason| Error::config("results_expire_in", reason))?;
        check_duration(*visibility_timeout, Duration::from_secs(1), "at least 1s")
            .map_err(|reason| Error::config("visibility_timeout", reason))?;
        check_duration(*retry_max_delay, Duration::from_secs(1), "at least 1s")
            .map_err(|reason| Error::config("retry_max_delay", reason))?;
        check_duration(*started_after, Duration::ZERO, "0 = every task")
            .map_err(|reason| Error::config("started_after_ms", reason))?;
        check_duration(*worker_heartbeat, Duration::from_secs(1), "at least 1s")
            .map_err(|reason| Error::config("worker_heartbeat", reason))?;
        check_duration(*stats_window, Duration::from_secs(60), "at least 1m")
            .map_err(|reason| Error::config("stats_window", reason))?;
        check_duration(*revoke_grace, Duration::ZERO, "0 = abort at once")
            .map_err(|reason| Error::config("revoke_grace", reason))?;
        check_duration(
            *progress_interval,
            Duration::from_millis(10),
            "at least 10ms",
        )
        .map_err(|reason| Error::config("progress_interval", reason))?;
        if *max_deliveries < 2 {
            return Err(Error::config(
                "max_deliveries",
                format!(
                    "expected a whole number of deliveries, at least 2; got `{max_deliveries}`"
                ),
            ));
        }
        if *max_message_bytes < 1024 {
            return Err(Error::config(
                "max_message_bytes",
                format!(
                    "expected a whole number of bytes, at least 1024; got `{max_message_bytes}`"
                ),
            ));
        }
        for (name, section) in &sections.0 {
            section
                .check()
                .map_err(|e| Error::config(format!("{name}.{}", e.field), e.reason))?;
        }
        Ok(())
    }
}

/// Checks that `url` names a linked engine.
fn check_url(key: &str, url: &str) -> Result<()> {
    let schemes = Config::schemes();
    let known = url
        .split_once("://")
        .is_some_and(|(scheme, _)| schemes.contains(&scheme));
    if known {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        let factory = inventory::iter::<crate::server::EngineFactory>
            .into_iter()
            .find(|f| f.schemes.contains(&scheme));
        if let Some(f) = factory {
            (f.check_url)(url).map_err(|reason| {
                Error::config(
                    key,
                    format!(
                        "invalid `{scheme}://` URL `{}`: {reason}",
                        redact_url(url).escape_debug()
                    ),
                )
            })?;
        }
        return Ok(());
    }
    Err(Error::config(
        key,
        format!(
            "expected a URL `scheme://…` whose scheme is one of {} (an engine crate adds \
             its schemes when it is linked: `use machinery_redis as _;`); got `{}`",
            schemes.join(", "),
            redact_url(url).escape_debug()
        ),
    ))
}

/// Checks a duration against its minimum and [`MAX_DURATION`], for
/// [`EngineSection::validate`] as for the core keys; `rule` completes the message
/// (`"at least 1s"`).
///
/// # Errors
///
/// The reason, starting with `expected` and showing the value.
pub fn check_duration(
    value: Duration,
    min: Duration,
    rule: &str,
) -> std::result::Result<(), String> {
    if value >= min && value <= MAX_DURATION {
        return Ok(());
    }
    let shown = if value > MAX_DURATION {
        format!("{}ms", value.as_millis())
    } else {
        format_duration(value)
    };
    Err(format!(
        "expected a duration, {rule}, at most {}ms; got `{shown}`",
        MAX_DURATION.as_millis()
    ))
}

#[cfg(test)]
mod tests;
