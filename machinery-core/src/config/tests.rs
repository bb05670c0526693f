use std::sync::Arc;

use super::load::{ENV_IGNORED, ENV_PREFIX, env_name};
use super::*;
use crate::engine::Broker;
use crate::engine::ResultBackend;
use crate::memory::{MemoryBackend, MemoryBroker};
use crate::registry::BoxFuture;
use crate::server::{EngineFactory, Server};

// ---- a third-party engine: its section and its schemes ------------------------------

/// The section of an engine this crate does not know, registered as an engine crate does.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TestEngineConfig {
    key_prefix: String,
    #[serde(rename = "wait_ms", deserialize_with = "serde_duration::millis")]
    wait: Duration,
    #[serde(deserialize_with = "serde_duration::seconds")]
    idle: Duration,
    #[serde(deserialize_with = "serde_whole::deserialize")]
    batch: usize,
}

impl Default for TestEngineConfig {
    fn default() -> Self {
        TestEngineConfig {
            key_prefix: "test".to_owned(),
            wait: Duration::from_secs(1),
            idle: Duration::from_secs(30),
            batch: 2,
        }
    }
}

impl EngineSection for TestEngineConfig {
    const NAME: &'static str = "testeng";

    fn validate(&self) -> std::result::Result<(), FieldError> {
        if self.key_prefix.is_empty() {
            return Err(FieldError {
                field: "key_prefix",
                reason: "expected a non-empty prefix; got ``".to_owned(),
            });
        }
        if !(1..=10).contains(&self.batch) {
            return Err(FieldError {
                field: "batch",
                reason: format!("expected 1 to 10; got `{}`", self.batch),
            });
        }
        check_duration(self.wait, Duration::from_millis(1), "at least 1ms").map_err(|reason| {
            FieldError {
                field: "wait_ms",
                reason,
            }
        })
    }
}

inventory::submit! { Section::of::<TestEngineConfig>() }

fn test_broker(config: Config) -> BoxFuture<crate::Result<Arc<dyn Broker>>> {
    Box::pin(async move { Ok(Arc::new(MemoryBroker::new(&config)) as Arc<dyn Broker>) })
}

fn test_backend(config: Config) -> BoxFuture<crate::Result<Arc<dyn ResultBackend>>> {
    Box::pin(async move {
        Ok(Arc::new(MemoryBackend::new(config.results_ttl())) as Arc<dyn ResultBackend>)
    })
}

inventory::submit! {
    EngineFactory {
        schemes: &["testeng", "testeng+tls"],
        broker: test_broker,
        backend: test_backend,
        check_url: |url| {
            if url.contains(' ') {
                Err("a testeng URL has no spaces".into())
            } else {
                Ok(())
            }
        },
    }
}

// ---- helpers ------------------------------------------------------------------------

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn env(pairs: &[(&str, &str)]) -> Result<Config> {
    Config::from_sources(None, vars(pairs))
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

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn all_env_names() -> Vec<String> {
    let core = section::fields_of::<Config>()
        .iter()
        .map(|f| env_name(None, f));
    let test = section::fields_of::<TestEngineConfig>()
        .iter()
        .map(|f| env_name(Some("testeng"), f));
    core.chain(test).collect()
}

// ---- defaults -------------------------------------------------------------------------

#[test]
fn defaults_are_as_documented() {
    let c = Config::default();
    assert_eq!(c.broker, "memory://");
    assert_eq!(c.result_backend, None);
    assert_eq!(c.default_queue, "machinery_tasks");
    assert_eq!(c.results_expire_in, secs(3600));
    assert_eq!(c.visibility_timeout, secs(60));
    assert_eq!(c.max_deliveries, 10);
    assert_eq!(c.unregistered_requeues, 3);
    assert_eq!(c.retry_max_delay, secs(600));
    assert_eq!(c.started_after, ms(10));
    assert_eq!(c.max_message_bytes, 8 * 1024 * 1024);
    assert!(c.result_extended);
    assert_eq!(c.worker_heartbeat, secs(5));
    assert!(c.stats);
    assert_eq!(c.stats_window, secs(24 * 3600));
    assert_eq!(c.revoke_grace, secs(10));
    assert_eq!(c.progress_interval, ms(250));
    assert_eq!(c.section::<TestEngineConfig>(), TestEngineConfig::default());
    c.validate().expect("defaults are valid");
}

#[test]
fn the_keys_are_the_serde_fields() {
    assert_eq!(
        section::fields_of::<Config>(),
        [
            "broker",
            "result_backend",
            "default_queue",
            "results_expire_in",
            "visibility_timeout",
            "max_deliveries",
            "unregistered_requeues",
            "retry_max_delay",
            "max_message_bytes",
            "started_after_ms",
            "result_extended",
            "worker_heartbeat",
            "stats",
            "stats_window",
            "revoke_grace",
            "progress_interval",
            "rate_limits",
        ]
    );
    // Every key has a distinct variable, listed in the module docs' table.
    let mut names = all_env_names();
    let docs = include_str!("mod.rs");
    for key in section::fields_of::<Config>() {
        assert!(
            docs.contains(&format!("| `{key}` | `{}` |", env_name(None, key))),
            "{key}"
        );
    }
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before);
}

#[test]
fn result_backend_url_falls_back_to_broker() {
    let mut c = Config {
        broker: "testeng://h:6379/0".to_owned(),
        ..Config::default()
    };
    assert_eq!(c.result_backend_url(), "testeng://h:6379/0");
    c.result_backend = Some("testeng://other:6379/1".to_owned());
    assert_eq!(c.result_backend_url(), "testeng://other:6379/1");
}

#[test]
fn results_ttl_is_none_for_zero() {
    let mut c = Config::default();
    assert_eq!(c.results_ttl(), Some(secs(3600)));
    c.results_expire_in = Duration::ZERO;
    assert_eq!(c.results_ttl(), None);
    c.results_expire_in = secs(1);
    assert_eq!(c.results_ttl(), Some(secs(1)));
}

// ---- environment ----------------------------------------------------------------------

#[test]
fn every_variable_is_read() {
    let c = env(&[
        ("MACHINERY_BROKER", "testeng://localhost:6379/0"),
        ("MACHINERY_RESULT_BACKEND", "testeng+tls://db:6380/2"),
        ("MACHINERY_DEFAULT_QUEUE", "emails"),
        ("MACHINERY_RESULTS_EXPIRE_IN", "0"),
        ("MACHINERY_VISIBILITY_TIMEOUT", "30"),
        ("MACHINERY_MAX_DELIVERIES", "5"),
        ("MACHINERY_UNREGISTERED_REQUEUES", "0"),
        ("MACHINERY_RETRY_MAX_DELAY", "120"),
        ("MACHINERY_MAX_MESSAGE_BYTES", "1024"),
        ("MACHINERY_STARTED_AFTER_MS", "0"),
        ("MACHINERY_RESULT_EXTENDED", "false"),
        ("MACHINERY_WORKER_HEARTBEAT", "2s"),
        ("MACHINERY_STATS", "off"),
        ("MACHINERY_STATS_WINDOW", "7d"),
        ("MACHINERY_REVOKE_GRACE", "1500ms"),
        ("MACHINERY_PROGRESS_INTERVAL", "1s"),
        ("MACHINERY_TESTENG_KEY_PREFIX", "app:v2"),
        ("MACHINERY_TESTENG_WAIT_MS", "250"),
        ("MACHINERY_TESTENG_IDLE", "2m"),
        ("MACHINERY_TESTENG_BATCH", "3"),
    ])
    .expect("valid");
    assert_eq!(c.broker, "testeng://localhost:6379/0");
    assert_eq!(c.result_backend_url(), "testeng+tls://db:6380/2");
    assert_eq!(c.default_queue, "emails");
    assert_eq!(c.results_ttl(), None);
    assert_eq!(c.visibility_timeout, secs(30));
    assert_eq!(c.max_deliveries, 5);
    assert_eq!(c.unregistered_requeues, 0);
    assert_eq!(c.retry_max_delay, secs(120));
    assert_eq!(c.max_message_bytes, 1024);
    assert_eq!(c.started_after, Duration::ZERO);
    assert!(!c.result_extended);
    assert_eq!(c.worker_heartbeat, secs(2));
    assert!(!c.stats);
    assert_eq!(c.stats_window, secs(7 * 86_400));
    assert_eq!(c.revoke_grace, ms(1500));
    assert_eq!(c.progress_interval, secs(1));
    let t: TestEngineConfig = c.section();
    assert_eq!(t.key_prefix, "app:v2");
    assert_eq!(t.wait, ms(250));
    assert_eq!(t.idle, secs(120));
    assert_eq!(t.batch, 3);
}

#[test]
fn env_durations_take_every_form() {
    for (value, want) in [
        ("500ms", ms(500)),
        ("2s", secs(2)),
        ("5m", secs(300)),
        ("1h30m", secs(5400)),
        ("1d", secs(86_400)),
        ("45", secs(45)),
    ] {
        let c = env(&[("MACHINERY_RESULTS_EXPIRE_IN", value)]).expect(value);
        assert_eq!(c.results_expire_in, want, "{value}");
    }
    // `_ms` keys: a bare number is milliseconds, units still work.
    let c = env(&[("MACHINERY_STARTED_AFTER_MS", "1500")]).expect("valid");
    assert_eq!(c.started_after, ms(1500));
    let c = env(&[("MACHINERY_STARTED_AFTER_MS", "2s")]).expect("valid");
    assert_eq!(c.started_after, secs(2));
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
    for name in all_env_names() {
        assert!(reason.contains(&name), "{reason} lacks {name}");
    }
    // Engine sections' variables too.
    let (key, reason) = config_error(env(&[("MACHINERY_TESTENG_BACH", "3")]));
    assert_eq!(key, "MACHINERY_TESTENG_BACH");
    assert!(
        reason.contains("did you mean `MACHINERY_TESTENG_BATCH`?"),
        "{reason}"
    );
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
    assert!(reason.starts_with("expected a duration"), "{reason}");
    assert!(reason.ends_with("got `abc`"), "{reason}");
    let message = Error::config(key, reason).to_string();
    assert!(message.contains("MACHINERY_RESULTS_EXPIRE_IN"), "{message}");
    // Validation errors name the variable that supplied the value, too.
    let (key, reason) = config_error(env(&[("MACHINERY_VISIBILITY_TIMEOUT", "500ms")]));
    assert_eq!(key, "MACHINERY_VISIBILITY_TIMEOUT");
    assert!(reason.contains("at least 1s"), "{reason}");
    let (key, reason) = config_error(env(&[("MACHINERY_TESTENG_BATCH", "11")]));
    assert_eq!(key, "MACHINERY_TESTENG_BATCH");
    assert!(reason.contains("1 to 10"), "{reason}");
}

#[test]
fn numbers_reject_signs_fractions_units_and_out_of_range() {
    let cases = [
        ("MACHINERY_VISIBILITY_TIMEOUT", "0", "at least 1s"),
        ("MACHINERY_VISIBILITY_TIMEOUT", "-5", "got `-5`"),
        ("MACHINERY_VISIBILITY_TIMEOUT", "1.5", "got `1.5`"),
        (
            "MACHINERY_VISIBILITY_TIMEOUT",
            "30 parsecs",
            "got `30 parsecs`",
        ),
        ("MACHINERY_MAX_DELIVERIES", "0", "at least 2"),
        ("MACHINERY_MAX_DELIVERIES", "1", "at least 2"),
        (
            "MACHINERY_MAX_DELIVERIES",
            "4294967296",
            "at most 4294967295",
        ),
        ("MACHINERY_MAX_DELIVERIES", "5s", "got `5s`"),
        ("MACHINERY_UNREGISTERED_REQUEUES", "4294967296", "at most"),
        ("MACHINERY_RETRY_MAX_DELAY", "0", "at least 1s"),
        ("MACHINERY_MAX_MESSAGE_BYTES", "1023", "at least 1024"),
        ("MACHINERY_TESTENG_BATCH", "0", "1 to 10"),
        ("MACHINERY_TESTENG_WAIT_MS", "0", "at least 1ms"),
        ("MACHINERY_TESTENG_WAIT_MS", "soon", "milliseconds"),
        ("MACHINERY_STARTED_AFTER_MS", "10us", "whole milliseconds"),
        (
            "MACHINERY_RESULTS_EXPIRE_IN",
            "99999999999999999999999",
            "at most 9223372036854775",
        ),
        (
            "MACHINERY_TESTENG_WAIT_MS",
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
        ("MACHINERY_TESTENG_WAIT_MS", "9223372036854775807"),
    ])
    .expect("valid");
    assert_eq!(c.visibility_timeout, secs(45));
    assert_eq!(c.max_deliveries, u32::MAX);
    assert_eq!(c.results_expire_in, secs(9_223_372_036_854_775));
    assert_eq!(c.section::<TestEngineConfig>().wait, MAX_DURATION);
}

#[test]
fn bad_urls_list_schemes_and_are_redacted() {
    for url in [
        "http://h",
        "localhost:6379",
        "testeng:/h",
        "TESTENG://h",
        "amqp://guest:hunter2@h:5672",
    ] {
        let (key, reason) = config_error(env(&[("MACHINERY_BROKER", url)]));
        assert_eq!(key, "MACHINERY_BROKER");
        assert!(reason.contains("memory, testeng, testeng+tls"), "{reason}");
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
fn a_linked_engine_s_schemes_are_accepted() {
    assert_eq!(Config::schemes(), ["memory", "testeng", "testeng+tls"]);
    for url in [
        "memory://",
        "testeng://h:6379/0",
        "testeng+tls://u:p@h:6380/1",
    ] {
        let c = env(&[("MACHINERY_BROKER", url), ("MACHINERY_RESULT_BACKEND", url)])
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(c.broker, url);
        assert_eq!(c.result_backend_url(), url);
    }
}

#[tokio::test]
async fn a_third_party_engine_connects_through_its_factory() {
    let c = Config::from_yaml_str("broker: testeng://h\ntesteng:\n  batch: 4\n").expect("valid");
    let server = Server::from_config(c).await.expect("the factory connects");
    assert_eq!(server.config().section::<TestEngineConfig>().batch, 4);
    // A section changed by hand is checked again before the engine connects.
    let mut c = Config::from_yaml_str("broker: testeng://h").expect("valid");
    c.section_mut::<TestEngineConfig>().batch = 0;
    let (key, _) = config_error(Server::from_config(c).await);
    assert_eq!(key, "testeng.batch");
}

#[test]
fn queue_rules() {
    for bad in [" ", "a b", "tab\there"] {
        let (key, reason) = config_error(env(&[("MACHINERY_DEFAULT_QUEUE", bad)]));
        assert_eq!(key, "MACHINERY_DEFAULT_QUEUE");
        assert!(reason.contains("without whitespace"), "{reason}");
    }
    let c = Config {
        default_queue: String::new(),
        ..Config::default()
    };
    let (key, _) = config_error(c.validate());
    assert_eq!(key, "default_queue");
}

#[test]
fn errors_come_in_a_fixed_order() {
    let a = config_error(env(&[
        ("MACHINERY_VISIBILITY_TIMEOUT", "x"),
        ("MACHINERY_DEFAULT_QUEUE", "a b"),
    ]));
    let b = config_error(env(&[
        ("MACHINERY_DEFAULT_QUEUE", "a b"),
        ("MACHINERY_VISIBILITY_TIMEOUT", "x"),
    ]));
    assert_eq!(a, b);
}

#[test]
fn last_repeated_value_wins() {
    let c = env(&[
        ("MACHINERY_DEFAULT_QUEUE", "z_first"),
        ("MACHINERY_DEFAULT_QUEUE", "a_second"),
    ])
    .expect("valid");
    assert_eq!(c.default_queue, "a_second");
}

#[test]
fn env_overlays_yaml() {
    let c = Config::from_sources(
        Some("default_queue: from_yaml\nmax_deliveries: 7\ntesteng:\n  batch: 5\n  wait_ms: 9"),
        vars(&[
            ("MACHINERY_DEFAULT_QUEUE", "from_env"),
            ("MACHINERY_TESTENG_BATCH", "6"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.default_queue, "from_env");
    assert_eq!(c.max_deliveries, 7);
    let t: TestEngineConfig = c.section();
    assert_eq!((t.batch, t.wait), (6, ms(9)));
}

#[test]
fn from_env_reads_the_process_environment_without_panicking() {
    // The test binary's environment must not be mutated (tests run in parallel);
    // with no MACHINERY_* set this is the defaults, otherwise whatever they say.
    let set = std::env::vars_os()
        .any(|(k, _)| k.to_string_lossy().starts_with(ENV_PREFIX) && k != ENV_IGNORED);
    if !set {
        assert_eq!(Config::from_env().expect("valid"), Config::default());
    }
}

// ---- YAML -------------------------------------------------------------------------------

#[test]
fn yaml_sets_every_key() {
    let c = Config::from_yaml_str(
        "broker: testeng://:pw@localhost:6379/0\n\
         result_backend: testeng://localhost:6379/1\n\
         default_queue: emails\n\
         results_expire_in: 0\n\
         visibility_timeout: 30\n\
         max_deliveries: 5\n\
         unregistered_requeues: 0\n\
         retry_max_delay: 120\n\
         max_message_bytes: 2048\n\
         started_after_ms: 250\n\
         result_extended: false\n\
         worker_heartbeat: 10s\n\
         stats: no\n\
         stats_window: 1h\n\
         revoke_grace: 0\n\
         progress_interval: 100ms\n\
         testeng:\n\
         \x20 key_prefix: app\n\
         \x20 wait_ms: 100\n\
         \x20 idle: 1h\n\
         \x20 batch: 8\n",
    )
    .expect("valid");
    assert_eq!(c.broker, "testeng://:pw@localhost:6379/0");
    assert_eq!(
        c.result_backend.as_deref(),
        Some("testeng://localhost:6379/1")
    );
    assert_eq!(c.default_queue, "emails");
    assert_eq!(c.results_expire_in, Duration::ZERO);
    assert_eq!(c.visibility_timeout, secs(30));
    assert_eq!(c.max_deliveries, 5);
    assert_eq!(c.unregistered_requeues, 0);
    assert_eq!(c.retry_max_delay, secs(120));
    assert_eq!(c.max_message_bytes, 2048);
    assert_eq!(c.started_after, ms(250));
    assert!(!c.result_extended);
    assert_eq!(c.worker_heartbeat, secs(10));
    assert!(!c.stats);
    assert_eq!(c.stats_window, secs(3600));
    assert_eq!(c.revoke_grace, Duration::ZERO);
    assert_eq!(c.progress_interval, ms(100));
    assert_eq!(
        c.section::<TestEngineConfig>(),
        TestEngineConfig {
            key_prefix: "app".to_owned(),
            wait: ms(100),
            idle: secs(3600),
            batch: 8,
        }
    );
}

#[test]
fn yaml_durations_take_every_form() {
    for (value, want) in [
        ("500ms", ms(500)),
        ("2s", secs(2)),
        ("5m", secs(300)),
        ("1h30m", secs(5400)),
        ("1d", secs(86_400)),
        ("45", secs(45)),
        ("'45'", secs(45)),
    ] {
        let c = Config::from_yaml_str(&format!("results_expire_in: {value}")).expect(value);
        assert_eq!(c.results_expire_in, want, "{value}");
    }
    let c =
        Config::from_yaml_str("started_after_ms: 1500\ntesteng:\n  wait_ms: 2s").expect("valid");
    assert_eq!(c.started_after, ms(1500));
    assert_eq!(c.section::<TestEngineConfig>().wait, secs(2));
}

#[test]
fn yaml_fields_are_all_optional() {
    for text in [
        "",
        "# nothing\n",
        "---\n",
        "{}",
        "testeng:\n",
        "testeng: {}",
        "broker: ~",
    ] {
        let c = Config::from_yaml_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(c, Config::default(), "{text:?}");
    }
    let c = Config::from_yaml_str("testeng:\n  batch: 5\n").expect("valid");
    let t: TestEngineConfig = c.section();
    assert_eq!(t.batch, 5);
    assert_eq!(t.key_prefix, "test");
    assert_eq!(c.broker, "memory://");
}

#[test]
fn yaml_numbers_may_be_quoted() {
    let c =
        Config::from_yaml_str("visibility_timeout: \"45\"\nmax_deliveries: '4'").expect("valid");
    assert_eq!(c.visibility_timeout, secs(45));
    assert_eq!(c.max_deliveries, 4);
}

#[test]
fn yaml_unknown_key_is_an_error_naming_it() {
    let (key, reason) = config_error(Config::from_yaml_str("brokr: memory://"));
    assert_eq!(key, "brokr");
    assert!(reason.contains("unknown key"), "{reason}");
    assert!(reason.contains("did you mean `broker`?"), "{reason}");
    assert!(reason.contains("testeng"), "{reason}");

    // An engine's section is checked the same way.
    let (key, reason) = config_error(Config::from_yaml_str("testeng:\n  bach: 3\n"));
    assert_eq!(key, "testeng.bach");
    assert!(reason.contains("did you mean `batch`?"), "{reason}");
    assert!(reason.contains("key_prefix"), "{reason}");
    assert!(!reason.contains("broker"), "{reason}");

    // Engine settings belong in their mapping, not at the top level.
    let (key, _) = config_error(Config::from_yaml_str("key_prefix: app"));
    assert_eq!(key, "key_prefix");
    let (key, reason) = config_error(Config::from_yaml_str("testeng.key_prefix: app"));
    assert_eq!(key, "testeng.key_prefix");
    assert!(reason.contains("`testeng: { key_prefix: … }`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("testeng_batch: 5"));
    assert_eq!(key, "testeng_batch");
    assert!(reason.contains("`testeng: { batch: … }`"), "{reason}");
    // Nor do top-level settings go in a section.
    let (key, _) = config_error(Config::from_yaml_str("testeng:\n  broker: memory://\n"));
    assert_eq!(key, "testeng.broker");
    // Keys are case-sensitive; the suggestion helps.
    let (key, reason) = config_error(Config::from_yaml_str("Broker: memory://"));
    assert_eq!(key, "Broker");
    assert!(reason.contains("did you mean `broker`?"), "{reason}");
    // A null value does not hide a typo.
    let (key, _) = config_error(Config::from_yaml_str("brokr:"));
    assert_eq!(key, "brokr");
    let (key, _) = config_error(Config::from_yaml_str("testeng:\n  bach:\n"));
    assert_eq!(key, "testeng.bach");
    // The section of an engine that is not linked is unknown.
    let (key, reason) = config_error(Config::from_yaml_str("amqp:\n  url: x\n"));
    assert_eq!(key, "amqp");
    assert!(reason.contains("unknown key"), "{reason}");
}

#[test]
fn yaml_value_errors_use_the_yaml_key() {
    let (key, reason) = config_error(Config::from_yaml_str("results_expire_in: abc"));
    assert_eq!(key, "results_expire_in");
    assert!(reason.starts_with("expected a duration"), "{reason}");
    assert!(reason.ends_with("got `abc`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("testeng:\n  key_prefix: ''"));
    assert_eq!(key, "testeng.key_prefix");
    assert!(reason.contains("non-empty"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("testeng:\n  wait_ms: soon"));
    assert_eq!(key, "testeng.wait_ms");
    assert!(reason.contains("got `soon`"), "{reason}");
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
    // Numbers beyond 64 bits arrive as floats: the reason names the limit, never a
    // unit or a value the user did not write.
    for yaml in [
        "results_expire_in: 99999999999999999999999999",
        "visibility_timeout: -99999999999999999999999999",
        "max_deliveries: 99999999999999999999999999",
    ] {
        let (_, reason) = config_error(Config::from_yaml_str(yaml));
        assert!(reason.contains("beyond 64 bits"), "{yaml}: {reason}");
        assert!(
            !reason.contains("e26") && !reason.contains("unit"),
            "{yaml}: {reason}"
        );
    }
}

#[test]
fn an_engine_checks_its_urls_when_the_config_is_validated() {
    for (vars, key) in [
        (
            vec![("MACHINERY_BROKER", "testeng://pw@h ost")],
            "MACHINERY_BROKER",
        ),
        (
            vec![("MACHINERY_RESULT_BACKEND", "testeng://h ost")],
            "MACHINERY_RESULT_BACKEND",
        ),
    ] {
        let vars = vars.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (got, reason) = config_error(Config::from_sources(None, vars));
        assert_eq!(got, key);
        assert!(reason.contains("a testeng URL has no spaces"), "{reason}");
    }
    let (key, _) = config_error(Config::from_yaml_str("broker: testeng://h ost"));
    assert_eq!(key, "broker");
}

#[test]
fn yaml_text_fields_reject_other_kinds() {
    let (key, reason) = config_error(Config::from_yaml_str("default_queue: 2024"));
    assert_eq!(key, "default_queue");
    assert!(reason.contains("integer `2024`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("broker: {a: 1}"));
    assert_eq!(key, "broker");
    assert!(reason.contains("map"), "{reason}");
    let c = Config::from_yaml_str("default_queue: '2024'").expect("valid");
    assert_eq!(c.default_queue, "2024");
}

#[test]
fn yaml_section_must_be_a_mapping() {
    let (key, reason) = config_error(Config::from_yaml_str("testeng: localhost"));
    assert_eq!(key, "testeng");
    assert!(reason.contains("expected a mapping"), "{reason}");
    assert!(reason.contains("key_prefix"), "{reason}");
}

#[test]
fn yaml_bad_url_is_redacted() {
    let (key, reason) = config_error(Config::from_yaml_str("broker: http://user:hunter2@h:1/0"));
    assert_eq!(key, "broker");
    assert!(reason.contains("memory, testeng, testeng+tls"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");
    assert!(reason.contains("http://user:***@h:1/0"), "{reason}");
}

#[test]
fn yaml_syntax_errors_are_config_file_errors_without_the_text() {
    let (path, reason) = file_error(Config::from_yaml_str(
        "broker: testeng://:hunter2@h\n  bad: [\n",
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
    let result = Config::from_yaml_str("broker: memory://\nbroker: testeng://h\n");
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn yaml_anchors_and_aliases_work() {
    let c = Config::from_yaml_str("broker: &url testeng://h:6379/0\nresult_backend: *url\n")
        .expect("valid");
    assert_eq!(c.result_backend_url(), "testeng://h:6379/0");
}

#[test]
fn yaml_file_then_env() {
    let text = std::fs::read_to_string(fixture("config_full.yaml")).expect("fixture exists");
    let c = Config::from_sources(
        Some(&text),
        vars(&[
            ("MACHINERY_DEFAULT_QUEUE", "from_env"),
            ("MACHINERY_TESTENG_WAIT_MS", "7"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.default_queue, "from_env");
    assert_eq!(c.section::<TestEngineConfig>().wait, ms(7));
    assert_eq!(c.broker, "testeng://:s3cret@127.0.0.1:6379/0");
    assert_eq!(c.section::<TestEngineConfig>().key_prefix, "fixture");
    assert_eq!(c.results_expire_in, secs(86_400));
}

#[test]
fn from_yaml_reads_a_file() {
    let set = std::env::vars_os()
        .any(|(k, _)| k.to_string_lossy().starts_with(ENV_PREFIX) && k != ENV_IGNORED);
    if set {
        return; // The environment would override the file: covered by yaml_file_then_env.
    }
    let c = Config::from_yaml(fixture("config_full.yaml")).expect("valid");
    assert_eq!(c.broker, "testeng://:s3cret@127.0.0.1:6379/0");
    assert_eq!(c.result_backend, None);
    assert_eq!(c.default_queue, "fixture_tasks");
    assert_eq!(c.results_expire_in, secs(86_400));
    assert_eq!(c.retry_max_delay, secs(300));
    assert_eq!(c.started_after, ms(250));
    let t: TestEngineConfig = c.section();
    assert_eq!(
        (t.key_prefix.as_str(), t.wait, t.batch),
        ("fixture", ms(500), 4)
    );
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
    assert_eq!(key, "testeng.keyprefix");
}

// ---- validate -------------------------------------------------------------------------

#[test]
fn validate_names_yaml_keys() {
    type Case = (fn(&mut Config), &'static str, &'static str);
    let cases: [Case; 18] = [
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
            |c| c.visibility_timeout = ms(999),
            "visibility_timeout",
            "at least 1s",
        ),
        (|c| c.max_deliveries = 1, "max_deliveries", "at least 2"),
        (
            |c| c.retry_max_delay = Duration::ZERO,
            "retry_max_delay",
            "at least 1s",
        ),
        (
            |c| c.max_message_bytes = 1023,
            "max_message_bytes",
            "at least 1024",
        ),
        (
            |c| c.section_mut::<TestEngineConfig>().key_prefix = String::new(),
            "testeng.key_prefix",
            "non-empty",
        ),
        (
            |c| c.section_mut::<TestEngineConfig>().batch = 0,
            "testeng.batch",
            "1 to 10",
        ),
        (
            |c| c.section_mut::<TestEngineConfig>().wait = Duration::MAX,
            "testeng.wait_ms",
            "at most",
        ),
        (
            |c| c.results_expire_in = Duration::MAX,
            "results_expire_in",
            "at most",
        ),
        (
            |c| c.started_after = Duration::MAX,
            "started_after_ms",
            "at most",
        ),
        (
            |c| c.worker_heartbeat = ms(999),
            "worker_heartbeat",
            "at least 1s",
        ),
        (|c| c.stats_window = secs(59), "stats_window", "at least 1m"),
        (
            |c| c.stats_window = Duration::MAX,
            "stats_window",
            "at most",
        ),
        (
            |c| c.revoke_grace = Duration::MAX,
            "revoke_grace",
            "at most",
        ),
        (
            |c| c.progress_interval = ms(9),
            "progress_interval",
            "at least 10ms",
        ),
        (
            |c| c.progress_interval = Duration::MAX,
            "progress_interval",
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
    let mut c = Config {
        results_expire_in: Duration::ZERO,
        unregistered_requeues: 0,
        visibility_timeout: secs(1),
        max_message_bytes: 1024,
        worker_heartbeat: secs(1),
        stats_window: secs(60),
        progress_interval: ms(10),
        ..Config::default()
    };
    c.section_mut::<TestEngineConfig>().key_prefix = "a:b-c_d.e".into();
    c.results_expire_in = MAX_DURATION;
    c.validate().expect("valid");
}

#[test]
fn sections_equal_their_defaults_when_missing() {
    let mut c = Config::default();
    let _ = c.section_mut::<TestEngineConfig>();
    assert_eq!(c, Config::default());
    c.section_mut::<TestEngineConfig>().batch = 3;
    assert_ne!(c, Config::default());
    assert_eq!(c.clone(), c);
}

// ---- redaction ------------------------------------------------------------------------

#[test]
fn debug_never_shows_a_password() {
    let c = Config::from_yaml_str(
        "broker: testeng://admin:hunter2@h:6379/0\n\
         result_backend: testeng+tls:///run/r.sock?pass=hunter3\n",
    )
    .expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("hunter3"), "{shown}");
    assert!(shown.contains("testeng://admin:***@h:6379/0"), "{shown}");
    assert!(shown.contains("pass=***"), "{shown}");
    assert!(shown.contains("machinery_tasks"), "{shown}");
    let pretty = format!("{c:#?}");
    assert!(!pretty.contains("hunter2"), "{pretty}");
}

// ---- on/off keys ------------------------------------------------------------------------

#[test]
fn switches_take_booleans_and_words() {
    for (yaml, want) in [
        ("true", true),
        ("false", false),
        ("on", true),
        ("off", false),
    ] {
        let c = Config::from_yaml_str(&format!("stats: {yaml}\nresult_extended: {yaml}"))
            .expect("valid");
        assert_eq!((c.stats, c.result_extended), (want, want), "{yaml}");
    }
    for (value, want) in [("TRUE", true), ("No", false), ("1", true), ("0", false)] {
        let c = env(&[("MACHINERY_STATS", value)]).expect("valid");
        assert_eq!(c.stats, want, "{value}");
    }
}

#[test]
fn switch_errors_name_the_key_and_the_words() {
    let (key, reason) = config_error(env(&[("MACHINERY_RESULT_EXTENDED", "maybe")]));
    assert_eq!(key, "MACHINERY_RESULT_EXTENDED");
    assert!(reason.contains("`true` or `false`"), "{reason}");
    assert!(reason.contains("`maybe`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("stats: 2"));
    assert_eq!(key, "stats");
    assert!(reason.contains("got `2`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("stats: [on]"));
    assert_eq!(key, "stats");
    assert!(reason.contains("`true` or `false`"), "{reason}");
}

#[test]
fn observability_durations_are_checked_when_loaded() {
    let (key, reason) = config_error(env(&[("MACHINERY_WORKER_HEARTBEAT", "500ms")]));
    assert_eq!(key, "MACHINERY_WORKER_HEARTBEAT");
    assert!(reason.contains("at least 1s"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("stats_window: 30s"));
    assert_eq!(key, "stats_window");
    assert!(reason.contains("at least 1m"), "{reason}");
    let c = Config::from_yaml_str("worker_heartbeat: 1\nstats_window: 1m").expect("edges");
    assert_eq!((c.worker_heartbeat, c.stats_window), (secs(1), secs(60)));
}

#[test]
fn progress_interval_takes_every_duration_form() {
    for (value, want) in [
        ("250ms", ms(250)),
        ("2", secs(2)),
        ("1s", secs(1)),
        ("10ms", ms(10)),
    ] {
        let c = env(&[("MACHINERY_PROGRESS_INTERVAL", value)]).expect(value);
        assert_eq!(c.progress_interval, want, "{value}");
        let c = Config::from_yaml_str(&format!("progress_interval: {value}")).expect(value);
        assert_eq!(c.progress_interval, want, "{value}");
    }
    let (key, reason) = config_error(env(&[("MACHINERY_PROGRESS_INTERVAL", "5ms")]));
    assert_eq!(key, "MACHINERY_PROGRESS_INTERVAL");
    assert!(reason.contains("at least 10ms"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("progress_interval: 0"));
    assert_eq!(key, "progress_interval");
    assert!(reason.contains("at least 10ms"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("progress_interval: soon"));
    assert_eq!(key, "progress_interval");
    assert!(reason.contains("`soon`"), "{reason}");
    let shown = format!("{:?}", Config::default());
    assert!(shown.contains("progress_interval: 250ms"), "{shown}");
}

// ---- rate limits ----------------------------------------------------------------------

#[test]
fn rate_limits_from_env_and_yaml() {
    use crate::RateLimit;
    assert!(Config::default().rate_limits.is_empty());
    let c = env(&[(
        "MACHINERY_RATE_LIMITS",
        " emails=100/s, sms = 10/m ,,bulk=5/10s",
    )])
    .expect("valid");
    assert_eq!(c.rate_limits.len(), 3);
    assert_eq!(c.rate_limits["emails"], RateLimit::new(100, 1000));
    assert_eq!(c.rate_limits["sms"], RateLimit::new(10, 60_000));
    assert_eq!(c.rate_limits["bulk"], RateLimit::new(5, 10_000));
    let c =
        Config::from_yaml_str("rate_limits:\n  emails: 100/s\n  sms: \"10/m\"\n").expect("valid");
    assert_eq!(c.rate_limits.len(), 2);
    assert_eq!(c.rate_limits["sms"], RateLimit::new(10, 60_000));
    // Flow style, and no value at all (unset).
    let c = Config::from_yaml_str("rate_limits: {a: 1/h}").expect("valid");
    assert_eq!(c.rate_limits["a"], RateLimit::new(1, 3_600_000));
    assert!(
        Config::from_yaml_str("rate_limits:")
            .expect("valid")
            .rate_limits
            .is_empty()
    );
    // The environment wins over the file, whole.
    let c = Config::from_sources(
        Some("rate_limits: {a: 1/h, b: 2/s}"),
        vars(&[("MACHINERY_RATE_LIMITS", "c=3/s")]),
    )
    .expect("valid");
    assert_eq!(c.rate_limits.keys().collect::<Vec<_>>(), ["c"]);
    assert!(format!("{c:?}").contains("rate_limits"));
}

#[test]
fn rate_limit_errors_name_the_key_and_the_queue() {
    for (value, says) in [
        ("emails", "is not `queue=rate`"),
        ("emails=fast", "queue `emails`"),
        ("emails=0/s", "from 1"),
        ("emails=10/fortnight", "unknown period"),
        ("=10/s", "non-empty queue name"),
        ("my queue=10/s", "without whitespace"),
        ("a=1/s,a=2/s", "listed twice"),
    ] {
        let (key, reason) = config_error(env(&[("MACHINERY_RATE_LIMITS", value)]));
        assert_eq!(key, "MACHINERY_RATE_LIMITS", "{value}");
        assert!(reason.contains(says), "{value}: {reason}");
    }
    for (yaml, at, says) in [
        (
            "rate_limits: {emails: fast}",
            "rate_limits",
            "queue `emails`",
        ),
        (
            "rate_limits: {emails: 100}",
            "rate_limits",
            "queue `emails`",
        ),
        ("rate_limits: {emails: 0/s}", "rate_limits", "from 1"),
        (
            "rate_limits: [a, b]",
            "rate_limits",
            "mapping of queue names",
        ),
        ("rate_limits: 5", "rate_limits", "mapping of queue names"),
        (
            "rate_limits: {\"a b\": 1/s}",
            "rate_limits",
            "without whitespace",
        ),
    ] {
        let (key, reason) = config_error(Config::from_yaml_str(yaml));
        assert!(key.starts_with(at), "{yaml}: {key}");
        assert!(reason.contains(says), "{yaml}: {reason}");
    }
}
