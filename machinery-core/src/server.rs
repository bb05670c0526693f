//! The server: configuration, broker and result backend together.

use std::fmt;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::config::Config;
use crate::engine::{
    Broker, BrokerAdmin, DeadLetter, Enqueued, Outgoing, ResultBackend, RevokeOutcome,
};
use crate::error::{Error, Result};
use crate::inspect::Inspector;
use crate::memory::{MemoryBackend, MemoryBroker};
use crate::registry::BoxFuture;
use crate::result::{AsyncResult, State, TaskState};
use crate::signature::RawSignature;

/// Connects a broker from a configuration: the [`EngineFactory::broker`] function.
pub type ConnectBroker = fn(Config) -> BoxFuture<Result<Arc<dyn Broker>>>;

/// Connects a result backend from a configuration: the [`EngineFactory::backend`]
/// function.
pub type ConnectBackend = fn(Config) -> BoxFuture<Result<Arc<dyn ResultBackend>>>;

/// Makes brokers and result backends for one URL scheme. Engine crates register one
/// with `inventory::submit!`, so [`Server::from_config`] finds them and
/// [`Config`] accepts their schemes; the crate must be linked
/// (`use machinery_redis as _;`).
///
/// ```
/// use std::sync::Arc;
///
/// use machinery_core::engine::{BoxFuture, Broker, EngineFactory, ResultBackend};
/// use machinery_core::memory::{MemoryBackend, MemoryBroker};
/// use machinery_core::{Config, Result, Server};
///
/// fn broker(config: Config) -> BoxFuture<Result<Arc<dyn Broker>>> {
///     Box::pin(async move { Ok(Arc::new(MemoryBroker::new(&config)) as Arc<dyn Broker>) })
/// }
///
/// fn backend(config: Config) -> BoxFuture<Result<Arc<dyn ResultBackend>>> {
///     Box::pin(async move {
///         Ok(Arc::new(MemoryBackend::new(config.results_ttl())) as Arc<dyn ResultBackend>)
///     })
/// }
///
/// inventory::submit! {
///     EngineFactory { schemes: &["toy"], broker, backend, check_url: |_| Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let config = Config::from_sources(None, [("MACHINERY_BROKER".into(), "toy://here".into())])?;
/// let server = Server::from_config(config).await?;
/// assert_eq!(server.broker().engine(), "memory"); // the broker `broker` made
/// # Ok(())
/// # }
/// ```
pub struct EngineFactory {
    /// URL schemes handled, e.g. `["redis", "rediss"]`.
    pub schemes: &'static [&'static str],
    /// Connects a broker to `config.broker`.
    pub broker: ConnectBroker,
    /// Connects a result backend to `config.result_backend_url()`.
    pub backend: ConnectBackend,
    /// Checks a URL of one of [`schemes`](EngineFactory::schemes) without connecting,
    /// when a [`Config`] is validated, so a malformed URL is reported naming its key
    /// (`broker`, `MACHINERY_BROKER`) before anything connects. The error is the
    /// reason only; it must not repeat the URL (it may hold a password).
    pub check_url: CheckUrl,
}

/// Checks an engine URL without connecting; see [`EngineFactory::check_url`].
pub type CheckUrl = fn(&str) -> std::result::Result<(), String>;

inventory::collect!(EngineFactory);

static DEFAULT: RwLock<Option<Server>> = RwLock::new(None);

/// Configuration, broker and result backend: what producers send through and what
/// workers consume from. Cheap to clone.
///
/// ```
/// use machinery_core::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), machinery_core::Error> {
/// // `memory://` unless MACHINERY_BROKER says otherwise.
/// let server = Server::from_env().await?;
/// server.install(); // typed senders (`add::send`) now use it
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    broker: Arc<dyn Broker>,
    backend: Arc<dyn ResultBackend>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.inner.config)
            .field("broker", &self.inner.broker.engine())
            .field("backend", &self.inner.backend.engine())
            .finish()
    }
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(s, _)| s)
}

impl Server {
    /// A server over the given engines.
    pub fn new(config: Config, broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> Self {
        Server {
            inner: Arc::new(Inner {
                config,
                broker,
                backend,
            }),
        }
    }

    /// A server on a fresh in-memory engine with the default configuration.
    pub fn memory() -> Self {
        Self::memory_with(Config::default())
    }

    /// A server on a fresh in-memory engine with `config`.
    pub fn memory_with(config: Config) -> Self {
        let broker = Arc::new(MemoryBroker::new(&config));
        let backend = Arc::new(MemoryBackend::new(config.results_ttl()));
        Server::new(config, broker, backend)
    }

    /// Connects the engines named by `config`: `memory://` here, others through the
    /// engine crates linked into the binary (`machinery-redis` for `redis://`).
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for a scheme no linked engine handles; connection errors.
    pub async fn from_config(config: Config) -> Result<Self> {
        config.validate()?;
        let broker: Arc<dyn Broker> = match scheme(&config.broker) {
            "memory" => Arc::new(MemoryBroker::new(&config)),
            s => (factory(s, &config.broker)?.broker)(config.clone()).await?,
        };
        let backend: Arc<dyn ResultBackend> = match scheme(config.result_backend_url()) {
            "memory" => Arc::new(MemoryBackend::new(config.results_ttl())),
            s => (factory(s, config.result_backend_url())?.backend)(config.clone()).await?,
        };
        Ok(Server::new(config, broker, backend))
    }

    /// [`Server::from_config`] with [`Config::from_env`].
    ///
    /// # Errors
    /// Configuration and connection errors.
    pub async fn from_env() -> Result<Self> {
        Self::from_config(Config::from_env()?).await
    }

    /// Makes this server the process-wide default used by typed senders
    /// (`add::send(..)`, [`Signature::send`](crate::Signature::send)) and by workers
    /// built without [`Worker::server`](crate::Worker::server). Replaces any previous one.
    pub fn install(&self) {
        let mut slot = DEFAULT.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(self.clone());
    }

    /// The process-wide default server.
    ///
    /// # Errors
    /// [`Error::NoDefaultServer`] when none is installed.
    pub fn global() -> Result<Self> {
        DEFAULT
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::NoDefaultServer)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The result backend.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.inner.backend
    }

    /// The queue a signature goes to: its own, or the default queue.
    pub fn queue_of<'a>(&'a self, raw: &'a RawSignature) -> &'a str {
        if raw.routing_key.is_empty() {
            &self.inner.config.default_queue
        } else {
            &raw.routing_key
        }
    }

    /// Encodes a signature for the broker, filling in the default queue and, inside a
    /// trace (a running task, or an OpenTelemetry span with feature `otel`), its
    /// [`traceparent`](crate::trace) header.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::MessageTooLarge`].
    pub fn outgoing(&self, raw: &mut RawSignature) -> Result<Outgoing> {
        self.route(raw);
        crate::trace::inject(raw);
        let payload = raw.encode()?;
        let limit = self.inner.config.max_message_bytes;
        if payload.len() > limit {
            return Err(Error::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(Outgoing {
            uuid: raw.uuid,
            queue: raw.routing_key.clone(),
            eta: raw.eta,
            priority: raw.priority,
            payload,
        })
    }

    /// Gives `raw` and every task nested in it (callbacks, error callbacks, chord
    /// callback) without a routing key the default queue, so that where each task's
    /// state is kept is decided once, by the producer. (The steps of a workflow's chain
    /// are routed when the workflow is built, before they are encoded into
    /// [`RawSignature::chain`].) Walks without recursion, so callbacks nested too deep to
    /// send reach [`RawSignature::encode`]'s refusal instead of overflowing the stack.
    pub fn route(&self, raw: &mut RawSignature) {
        let mut stack = vec![raw];
        while let Some(raw) = stack.pop() {
            if raw.routing_key.is_empty() {
                raw.routing_key.clone_from(&self.inner.config.default_queue);
            }
            stack.extend(
                raw.on_success
                    .iter_mut()
                    .chain(raw.on_error.iter_mut())
                    .chain(raw.chord_callback.as_deref_mut()),
            );
        }
    }

    /// `queue`, or the default queue when it is empty.
    pub(crate) fn queue_or(&self, queue: String) -> String {
        if queue.is_empty() {
            self.inner.config.default_queue.clone()
        } else {
            queue
        }
    }

    /// Sends one signature: stores its PENDING state and publishes it. A unique one (see
    /// [`send_batch`](Server::send_batch)) may find its key held instead.
    ///
    /// # Errors
    /// Encoding, size and engine errors.
    pub async fn send_raw(&self, raw: RawSignature) -> Result<Enqueued> {
        let uuid = raw.uuid;
        let sent = self.send_batch(vec![raw]).await?;
        Ok(sent.into_iter().next().unwrap_or(Enqueued::Sent { uuid }))
    }

    /// Sends many signatures in one batch (one round trip on engines that allow it) and
    /// says, per signature in order, what was enqueued.
    ///
    /// A signature with a [unique lock](RawSignature::unique) (set by
    /// [`Signature::unique_for`](crate::Signature::unique_for), `unique_key`,
    /// `#[task(unique)]` or [`with_uuid`](crate::Signature::with_uuid)) is sent apart,
    /// through [`Broker::publish_unique`], each on its own (concurrently, one pipelined
    /// round trip on Redis): it is [`Enqueued::Duplicate`] when its key, or its UUID, is
    /// held, and the others are sent all the same. Signatures without one cost what
    /// they always did: one batch, no lock, no check.
    ///
    /// # Errors
    /// Encoding, size and engine errors; nothing is sent when one message is invalid.
    /// [`Error::Unsupported`] for a unique signature on an engine without unique tasks.
    pub async fn send_batch(&self, raws: Vec<RawSignature>) -> Result<Vec<Enqueued>> {
        let mut out = Vec::with_capacity(raws.len());
        let mut messages = Vec::with_capacity(raws.len());
        let mut states = Vec::with_capacity(raws.len());
        // Success callbacks run later: PENDING now, so a handle made from a callback's
        // UUID finds it (and learns its FAILURE when the task before it fails).
        let mut later = Vec::new();
        // Unique messages: position, message, state, lock, their callbacks' states.
        let mut unique = Vec::new();
        let extended = self.inner.config.result_extended;
        for mut raw in raws {
            let mut nested = Vec::new();
            if !raw.on_success.is_empty() {
                self.route(&mut raw);
                crate::workflow::build::collect_nested(&raw, extended, &mut nested);
            }
            let message = self.outgoing(&mut raw)?;
            let lock = raw.unique.take();
            out.push(Enqueued::Sent { uuid: raw.uuid });
            // The message is encoded: its parts move into the state.
            let mut state = TaskState::new(raw.uuid, raw.name, raw.routing_key, State::Pending);
            state.group_uuid = raw.group_uuid;
            state.workflow = raw.workflow;
            state.sent_at = raw.created_at;
            if extended {
                state.args = Some(raw.args);
                state.headers = raw.headers;
                state.schema = Some(raw.schema).filter(|s| !s.is_empty());
            }
            match lock {
                Some(lock) => unique.push((out.len() - 1, message, state, lock, nested)),
                None => {
                    later.append(&mut nested);
                    messages.push(message);
                    states.push(state);
                }
            }
        }
        if !later.is_empty() {
            self.inner.backend.store(&later).await?;
        }
        let broker = &self.inner.broker;
        let backend = self.inner.backend.as_ref();
        if !messages.is_empty() || unique.is_empty() {
            broker
                .publish_with_states(messages, &states, backend)
                .await?;
        }
        if unique.is_empty() {
            return Ok(out);
        }
        let sent = futures_util::future::try_join_all(unique.iter().map(
            |(_, message, state, lock, _)| async move {
                let sent = broker
                    .publish_unique(message.clone(), state, lock, backend)
                    .await?;
                // A lock whose holder was revoked before a worker settled it (its
                // message still waits, to be skipped) is free: released once
                // (compare-and-delete, so a racing sender's new lock stays), then the
                // send is decided again.
                match sent {
                    Enqueued::Duplicate { uuid }
                        if uuid != message.uuid
                            && !lock.key.is_empty()
                            && backend
                                .load(&message.queue, uuid)
                                .await?
                                .is_some_and(|st| st.state == State::Revoked) =>
                    {
                        broker
                            .release_unique(&message.queue, &lock.key, uuid)
                            .await?;
                        broker
                            .publish_unique(message.clone(), state, lock, backend)
                            .await
                    }
                    sent => Ok(sent),
                }
            },
        ))
        .await?;
        // The callbacks' PENDING states of the messages sent (a duplicate's callbacks
        // never run). Stored after the send: a final state already written by a fast
        // worker is not replaced by them (`store` keeps final states).
        let mut later = Vec::new();
        for ((i, _, _, _, nested), enqueued) in unique.into_iter().zip(sent) {
            if !enqueued.is_duplicate() {
                later.extend(nested);
            }
            out[i] = enqueued;
        }
        if !later.is_empty() {
            self.inner.backend.store(&later).await?;
        }
        Ok(out)
    }

    /// A typed handle to the result of task `uuid`, whatever queue it was sent to: the
    /// first read ([`state`](AsyncResult::state), [`get`](AsyncResult::get), …) looks the
    /// task up in every queue the engine knows, and the handle keeps the queue found
    /// ([`AsyncResult::queue`] is empty until then). Reading an unknown or expired task
    /// fails with [`Error::ResultMissing`]. The task's generated `result(uuid)` does the
    /// same with its result type filled in.
    ///
    /// On Redis the lookup costs a round trip more than [`result_in`](Server::result_in),
    /// once per handle, and searches the queues that messages were published to, or that
    /// later workflow steps were stored for when their workflow was sent (and the default
    /// queue).
    pub fn result<T: serde::de::DeserializeOwned>(&self, uuid: Uuid, name: &str) -> AsyncResult<T> {
        AsyncResult::on(self, uuid, name, "")
    }

    /// A typed handle to the result of task `uuid`, sent to `queue` (the direct form of
    /// [`result`](Server::result): no lookup).
    pub fn result_in<T: serde::de::DeserializeOwned>(
        &self,
        uuid: Uuid,
        name: &str,
        queue: &str,
    ) -> AsyncResult<T> {
        AsyncResult::on(self, uuid, name, queue)
    }

    /// Revokes task `uuid`, whatever queue it was sent to (looked up as by
    /// [`result`](Server::result)); see [`AsyncResult::cancel`] for what happens to it
    /// and what the outcome says. The revocation is kept for the results TTL
    /// (`results_expire_in`; forever when 0).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the result backend cannot revoke; engine errors.
    pub async fn revoke(&self, uuid: Uuid) -> Result<RevokeOutcome> {
        self.revoke_in("", uuid).await
    }

    /// Revokes task `uuid`, sent to `queue` (the direct form of
    /// [`revoke`](Server::revoke): no lookup; empty looks it up).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the result backend cannot revoke; engine errors.
    pub async fn revoke_in(&self, queue: &str, uuid: Uuid) -> Result<RevokeOutcome> {
        let until = crate::result::revoke_until(self.config().results_ttl());
        self.inner
            .backend
            .revoke(queue, uuid, "revoked", until)
            .await
    }

    /// The broker's admin plane: listings, counts and dead letters.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the broker's engine has none.
    pub fn admin(&self) -> Result<&dyn BrokerAdmin> {
        let broker = &self.inner.broker;
        broker.admin().ok_or(Error::Unsupported {
            engine: broker.engine(),
            what: "listing and administering queues",
        })
    }

    /// The inspect and admin façade over this server's engines: queues, paged task
    /// listings, one task by UUID, workers, statistics and actions.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the broker's engine has no admin plane
    /// ([`Broker::admin`]).
    pub fn inspect(&self) -> Result<Inspector> {
        self.admin()?;
        Ok(Inspector::new(self.clone()))
    }

    /// The signatures ready in `queue`, in delivery order. Messages that do not decode
    /// are left out (they go to the dead-letter queue when consumed).
    ///
    /// This reads the whole queue into memory: for a queue of any size, page through it
    /// with [`Server::inspect`] and [`Inspector::tasks`](crate::inspect::Inspector::tasks).
    ///
    /// # Errors
    /// [`Error::Unsupported`] without an admin plane; engine errors.
    pub async fn pending_tasks(&self, queue: &str) -> Result<Vec<RawSignature>> {
        let payloads = self.admin()?.pending(queue).await?;
        Ok(decode_all(&payloads))
    }

    /// The signatures waiting for their ETA, in `queue` or in every queue, soonest
    /// first.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without an admin plane; engine errors.
    pub async fn delayed_tasks(&self, queue: Option<&str>) -> Result<Vec<RawSignature>> {
        let payloads = self.admin()?.delayed(queue).await?;
        Ok(decode_all(&payloads))
    }

    /// The dead-letter queue of `queue`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without an admin plane; engine errors.
    pub async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>> {
        self.admin()?.dead_letters(queue).await
    }

    /// Moves the dead letters of `queue` back into it.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without an admin plane; engine errors.
    pub async fn requeue_dead_letters(&self, queue: &str) -> Result<usize> {
        self.admin()?.requeue_dead_letters(queue).await
    }

    /// Deletes the dead letters of `queue`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without an admin plane; engine errors.
    pub async fn purge_dead_letters(&self, queue: &str) -> Result<usize> {
        self.admin()?.purge_dead_letters(queue).await
    }
}

fn decode_all(payloads: &[Vec<u8>]) -> Vec<RawSignature> {
    payloads
        .iter()
        .filter_map(|p| RawSignature::decode(p).ok())
        .collect()
}

fn factory(scheme: &str, url: &str) -> Result<&'static EngineFactory> {
    inventory::iter::<EngineFactory>
        .into_iter()
        .find(|f| f.schemes.contains(&scheme))
        .ok_or_else(|| Error::UnsupportedUrl {
            url: crate::config::redact_url(url),
            reason: format!(
                "no engine for `{scheme}://` is linked into this binary; `memory://` is built in, \
                 `redis://` needs the machinery-redis crate (add it and reference it, e.g. `use machinery_redis as _;`)"
            ),
        })
}
