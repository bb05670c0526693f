//! The `redis:` section and the Redis URL schemes, as a linked machinery-redis adds them.

use std::time::Duration;

use machinery_core::{Config, Error};
use machinery_redis::RedisConfig;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn config_error(result: machinery_core::Result<Config>) -> (String, String) {
    match result {
        Err(Error::Config { key, reason }) => (key, reason),
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn defaults_are_as_documented() {
    let r: RedisConfig = Config::default().section();
    assert_eq!(r.key_prefix, "machinery");
    assert_eq!(r.connect_timeout, Duration::from_secs(5));
    assert_eq!(r.response_timeout, Duration::from_secs(5));
    assert_eq!(r.fetch_batch, 64);
    assert_eq!(r.block, Duration::from_secs(5));
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
        let c = Config::from_sources(None, vars(&[("MACHINERY_BROKER", url)]))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(c.broker, url);
    }
    // A malformed URL of a known scheme is refused when the config is loaded, naming
    // the key, never showing the password.
    for url in [
        "redis://:pw@127.0.0.1:abc/0",
        "redis://:pw@127.0.0.1:99999999/0",
        "redis://:pw@127.0.0.1:6379/xyz",
    ] {
        let (key, reason) = config_error(Config::from_sources(
            None,
            vars(&[("MACHINERY_BROKER", url)]),
        ));
        assert_eq!(key, "MACHINERY_BROKER", "{url}");
        assert!(reason.contains("invalid `redis://` URL"), "{url}: {reason}");
        assert!(!reason.contains("pw"), "{url}: {reason}");
    }
    let (_, reason) = config_error(Config::from_yaml_str("broker: http://h"));
    assert!(
        reason.contains("memory, redis, redis+unix, rediss, unix"),
        "{reason}"
    );
}

#[test]
fn yaml_sets_every_key_with_ms_keys_in_milliseconds() {
    let c = Config::from_yaml_str(
        "redis:\n  key_prefix: app\n  connect_timeout_ms: 100\n  response_timeout_ms: 2s\n  \
         fetch_batch: 8\n  block_ms: 250\n",
    )
    .expect("valid");
    let r: RedisConfig = c.section();
    assert_eq!(r.key_prefix, "app");
    assert_eq!(r.connect_timeout, Duration::from_millis(100));
    assert_eq!(r.response_timeout, Duration::from_secs(2));
    assert_eq!(r.fetch_batch, 8);
    assert_eq!(r.block, Duration::from_millis(250));
}

#[test]
fn every_variable_is_read() {
    let c = Config::from_sources(
        Some("redis:\n  key_prefix: from_yaml\n"),
        vars(&[
            ("MACHINERY_REDIS_KEY_PREFIX", "app:v2"),
            ("MACHINERY_REDIS_CONNECT_TIMEOUT_MS", "250"),
            ("MACHINERY_REDIS_RESPONSE_TIMEOUT_MS", "1"),
            ("MACHINERY_REDIS_FETCH_BATCH", "1"),
            ("MACHINERY_REDIS_BLOCK_MS", "1m"),
        ]),
    )
    .expect("valid");
    let r: RedisConfig = c.section();
    assert_eq!(r.key_prefix, "app:v2");
    assert_eq!(r.connect_timeout, Duration::from_millis(250));
    assert_eq!(r.response_timeout, Duration::from_millis(1));
    assert_eq!(r.fetch_batch, 1);
    assert_eq!(r.block, Duration::from_secs(60));
}

#[test]
fn unknown_keys_and_variables_are_named_with_a_suggestion() {
    let (key, reason) = config_error(Config::from_yaml_str("redis:\n  fetch_bach: 3\n"));
    assert_eq!(key, "redis.fetch_bach");
    assert!(reason.contains("did you mean `fetch_batch`?"), "{reason}");
    assert!(reason.contains("key_prefix"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("redis.key_prefix: app"));
    assert_eq!(key, "redis.key_prefix");
    assert!(reason.contains("`redis: { key_prefix: … }`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("redis_block_ms: 5"));
    assert_eq!(key, "redis_block_ms");
    assert!(reason.contains("`redis: { block_ms: … }`"), "{reason}");
    let (key, reason) = config_error(Config::from_sources(
        None,
        vars(&[("MACHINERY_REDIS_BLOCKMS", "5")]),
    ));
    assert_eq!(key, "MACHINERY_REDIS_BLOCKMS");
    assert!(
        reason.contains("did you mean `MACHINERY_REDIS_BLOCK_MS`?"),
        "{reason}"
    );
}

#[test]
fn bad_values_name_the_key_as_written() {
    let cases = [
        ("MACHINERY_REDIS_FETCH_BATCH", "0", "1 to 1000"),
        ("MACHINERY_REDIS_FETCH_BATCH", "1001", "1 to 1000"),
        ("MACHINERY_REDIS_BLOCK_MS", "0", "at least 1ms"),
        ("MACHINERY_REDIS_CONNECT_TIMEOUT_MS", "soon", "milliseconds"),
        ("MACHINERY_REDIS_CONNECT_TIMEOUT_MS", "0", "at least 1ms"),
        ("MACHINERY_REDIS_RESPONSE_TIMEOUT_MS", "0s", "at least 1ms"),
        ("MACHINERY_REDIS_KEY_PREFIX", "{app}", "`{` or `}`"),
        ("MACHINERY_REDIS_KEY_PREFIX", "a b", "`{` or `}`"),
        (
            "MACHINERY_REDIS_BLOCK_MS",
            "9223372036854775808",
            "at most 9223372036854775807",
        ),
    ];
    for (name, value, needle) in cases {
        let (key, reason) = config_error(Config::from_sources(None, vars(&[(name, value)])));
        assert_eq!(key, name);
        assert!(reason.contains(needle), "{name}={value}: {reason}");
    }
    let (key, reason) = config_error(Config::from_yaml_str("redis:\n  key_prefix: 'a b'"));
    assert_eq!(key, "redis.key_prefix");
    assert!(reason.contains("got `a b`"), "{reason}");
    let (key, reason) = config_error(Config::from_yaml_str("redis: localhost"));
    assert_eq!(key, "redis");
    assert!(reason.contains("expected a mapping"), "{reason}");
}

#[test]
fn a_section_changed_by_hand_is_validated() {
    let mut c = Config::default();
    c.section_mut::<RedisConfig>().fetch_batch = 0;
    let (key, _) = config_error(c.validate().map(|()| Config::default()));
    assert_eq!(key, "redis.fetch_batch");
}

#[tokio::test]
async fn connect_checks_the_section_too() {
    let mut c = Config::default();
    c.broker = "redis://127.0.0.1:1/0".into();
    c.section_mut::<RedisConfig>().key_prefix = String::new();
    let e = machinery_redis::connect(&c)
        .await
        .expect_err("invalid prefix");
    assert!(
        matches!(e, machinery_redis::Error::Config { ref key, .. } if key == "redis.key_prefix"),
        "{e}"
    );
}
