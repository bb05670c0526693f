//! The `dashboard:` section of the configuration.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use machinery_core::__private::inventory;
use machinery_core::config::{EngineSection, FieldError, Section, serde_duration, serde_whole};
use serde::Deserialize;

/// Settings of the dashboard: the `dashboard:` mapping in YAML and the
/// `MACHINERY_DASHBOARD_*` variables. Read it with `config.section::<DashboardConfig>()`.
///
/// | YAML key | environment variable | default | accepted |
/// |---|---|---|---|
/// | `dashboard.listen` | `MACHINERY_DASHBOARD_LISTEN` | `127.0.0.1:8080` | `HOST:PORT` |
/// | `dashboard.username` | `MACHINERY_DASHBOARD_USERNAME` | none | with `password`: HTTP basic auth |
/// | `dashboard.password` | `MACHINERY_DASHBOARD_PASSWORD` | none | with `username` |
/// | `dashboard.token` | `MACHINERY_DASHBOARD_TOKEN` | none | bearer token (`Authorization: Bearer …`), at least 16 characters |
/// | `dashboard.refresh` | `MACHINERY_DASHBOARD_REFRESH` | `5s` | how often pages reload themselves; `0` never |
/// | `dashboard.page_size` | `MACHINERY_DASHBOARD_PAGE_SIZE` | `50` | tasks per page, 1 to 1000 |
///
/// With credentials set, every route needs them (basic auth, or the bearer token; either
/// one is enough when both are set). Without credentials the dashboard refuses to listen
/// off loopback ([`DashboardConfig::check_listen`]). `Debug` never shows the password or
/// the token.
///
/// # Examples
///
/// ```
/// use machinery_core::Config;
/// use machinery_dashboard::DashboardConfig;
///
/// let config = Config::from_yaml_str("dashboard:\n  username: ops\n  password: s3cret\n")?;
/// let dashboard: DashboardConfig = config.section();
/// assert!(dashboard.has_credentials());
/// assert!(!format!("{dashboard:?}").contains("s3cret"));
/// # Ok::<(), machinery_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// Where `machinery dashboard` listens (`dashboard.listen`); default
    /// `127.0.0.1:8080`.
    pub listen: String,
    /// The HTTP basic auth user name (`dashboard.username`); needs `password`.
    pub username: Option<String>,
    /// The HTTP basic auth password (`dashboard.password`); needs `username`.
    pub password: Option<String>,
    /// A bearer token (`dashboard.token`): `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How often pages reload themselves (`dashboard.refresh`); default 5 s; zero:
    /// never.
    #[serde(deserialize_with = "serde_duration::seconds")]
    pub refresh: Duration,
    /// Tasks per page of a listing (`dashboard.page_size`); default 50; 1 to 1000.
    #[serde(deserialize_with = "serde_whole::deserialize")]
    pub page_size: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: "127.0.0.1:8080".to_owned(),
            username: None,
            password: None,
            token: None,
            refresh: Duration::from_secs(5),
            page_size: 50,
        }
    }
}

impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("DashboardConfig")
            .field("listen", &self.listen)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .field("refresh", &self.refresh)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// Shortest reload interval: a page reloaded faster than this is a load on the broker,
/// not a view.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Longest reload interval (browsers' timers overflow past 2^31 ms, about 24.8 days).
pub(crate) const MAX_REFRESH: Duration = Duration::from_secs(3600);

/// Shortest bearer token accepted: a guessable token is no protection.
const MIN_TOKEN_LEN: usize = 16;

impl DashboardConfig {
    /// Whether basic-auth credentials or a bearer token are set.
    ///
    /// Empty values count as unset (and never match), so a config built in code with
    /// an empty token does not open the dashboard off loopback.
    pub fn has_credentials(&self) -> bool {
        let set = |s: &Option<String>| s.as_ref().is_some_and(|s| !s.is_empty());
        self.token_usable() || (set(&self.username) && set(&self.password))
    }

    /// Whether the token is one [validation](EngineSection::validate) accepts: at
    /// least 16 characters, no whitespace. A config built in code skips validation; a
    /// token it would refuse counts as no token (and never matches).
    pub(crate) fn token_usable(&self) -> bool {
        self.token.as_ref().is_some_and(|t| {
            t.chars().count() >= MIN_TOKEN_LEN && !t.chars().any(char::is_whitespace)
        })
    }

    /// Refuses to serve `addr` without credentials unless it is a loopback address
    /// (`127.0.0.0/8`, `::1`): actions change data, and anyone who reaches an open
    /// dashboard could take them.
    ///
    /// # Errors
    /// A sentence saying what to set.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), String> {
        if addr.ip().is_loopback() || self.has_credentials() {
            return Ok(());
        }
        Err(format!(
            "refusing to serve the dashboard on {addr} without credentials: it is not a \
             loopback address and anyone who reaches it could purge queues. Set \
             dashboard.username and dashboard.password (MACHINERY_DASHBOARD_USERNAME, \
             MACHINERY_DASHBOARD_PASSWORD) or dashboard.token (MACHINERY_DASHBOARD_TOKEN), or \
             listen on 127.0.0.1"
        ))
    }
}

impl EngineSection for DashboardConfig {
    const NAME: &'static str = "dashboard";

    fn validate(&self) -> Result<(), FieldError> {
        let invalid = |field, reason| Err(FieldError { field, reason });
        if self.listen.trim().is_empty() {
            return invalid(
                "listen",
                "expected HOST:PORT; got an empty value".to_owned(),
            );
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return invalid(
                    "password",
                    "expected a password with dashboard.username; got none".to_owned(),
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "username",
                    "expected a user name with dashboard.password; got none".to_owned(),
                );
            }
            (Some(u), Some(p)) if u.is_empty() || p.is_empty() || u.contains(':') => {
                return invalid(
                    "username",
                    "expected a non-empty user name without `:` and a non-empty password"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if let Some(token) = &self.token
            && (token.chars().count() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace()))
        {
            return invalid(
                "token",
                format!(
                    "expected a token of at least {MIN_TOKEN_LEN} characters without \
                     whitespace; got one of {}",
                    token.chars().count()
                ),
            );
        }
        if !self.refresh.is_zero() && !(MIN_REFRESH..=MAX_REFRESH).contains(&self.refresh) {
            return invalid(
                "refresh",
                format!(
                    "expected 0 (never) or 1s to 1h; got {}",
                    machinery_core::config::format_duration(self.refresh)
                ),
            );
        }
        if !(1..=1000).contains(&self.page_size) {
            return invalid(
                "page_size",
                format!("expected 1 to 1000; got `{}`", self.page_size),
            );
        }
        Ok(())
    }
}

inventory::submit! { Section::of::<DashboardConfig>() }

#[cfg(test)]
mod tests {
    use super::*;
    use machinery_core::Config;

    #[test]
    fn refuses_half_credentials_and_short_tokens() {
        for (yaml, key) in [
            ("dashboard:\n  username: a\n", "dashboard.password"),
            ("dashboard:\n  password: a\n", "dashboard.username"),
            ("dashboard:\n  token: short\n", "dashboard.token"),
            ("dashboard:\n  page_size: 0\n", "dashboard.page_size"),
            ("dashboard:\n  refresh: soon\n", "dashboard.refresh"),
            ("dashboard:\n  refresh: 1ms\n", "dashboard.refresh"),
            ("dashboard:\n  refresh: 25d\n", "dashboard.refresh"),
            (
                "dashboard:\n  username: a\n  password: ''\n",
                "dashboard.username",
            ),
        ] {
            let err = Config::from_yaml_str(yaml).expect_err(yaml).to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn loopback_needs_no_credentials_elsewhere_it_does() {
        let open = DashboardConfig::default();
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let v6: SocketAddr = "[::1]:8080".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert!(open.check_listen(local).is_ok());
        assert!(open.check_listen(v6).is_ok());
        assert!(
            open.check_listen(any)
                .unwrap_err()
                .contains("MACHINERY_DASHBOARD_TOKEN")
        );
        let closed = DashboardConfig {
            token: Some("0123456789abcdef".into()),
            ..DashboardConfig::default()
        };
        assert!(closed.check_listen(any).is_ok());
        // Set in code, empty secrets are no credentials.
        let empty = DashboardConfig {
            token: Some(String::new()),
            username: Some(String::new()),
            password: Some(String::new()),
            ..DashboardConfig::default()
        };
        assert!(!empty.has_credentials());
        let short = DashboardConfig {
            token: Some("x".into()),
            ..DashboardConfig::default()
        };
        assert!(
            !short.has_credentials(),
            "a token validation refuses is no token"
        );
        let spaces = DashboardConfig {
            token: Some(" ".repeat(20)),
            ..DashboardConfig::default()
        };
        assert!(!spaces.has_credentials());
        assert!(empty.check_listen(any).is_err());
    }
}
