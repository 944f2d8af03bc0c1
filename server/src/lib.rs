//! Marquee: one process that owns a durable table store and serves it over
//! REST, Server-Sent Events and WebSockets, with the web app on top.
//!
//! Data flows one way: protocol modules (`http`) write through `store`, whose
//! single writer commits and then publishes on `bus`; every stream reads from
//! the bus through a `feed`.

// Input comes from the network almost everywhere in this crate: no indexing,
// unwrapping or panicking outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod access;
pub mod admin;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
pub mod device_sim;
pub mod devices;
pub mod feed;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod mqtt;
pub mod player;
pub mod schema;
pub mod shutdown;
pub mod store;
pub mod topic;

use std::net::SocketAddr;
use std::sync::Arc;

use leptos::config::{Env, LeptosOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::bus::Bus;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::mqtt::Broker;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the admin account from MARQUEE_ADMIN_PASSWORD: {0}")]
    Admin(#[from] auth::AuthError),
    #[error(
        "auth mode \"open\" lets anyone connect without an account, so Marquee runs it only when every listener is on loopback; {0} is not. Use mode \"accounts\" (the default) or listen on 127.0.0.1"
    )]
    OpenBeyondLoopback(SocketAddr),
}

/// A started server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    store: Store,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    mqtt: JoinHandle<()>,
    player: JoinHandle<()>,
    follower: JoinHandle<()>,
    /// Every connection and stream task (MQTT connections, delayed wills,
    /// SSE and WebSocket streams): shutdown waits for them before the store stops.
    tasks: TaskTracker,
    setup_link: Option<String>,
}

/// How long shutdown waits for connection tasks to finish their last writes.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Server {
    /// Opens the store and starts listening.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        if config.access.mode == access::Mode::Open {
            for addr in [config.http, config.mqtt] {
                if !addr.ip().is_loopback() {
                    return Err(StartError::OpenBeyondLoopback(addr));
                }
            }
        }
        let metrics = Arc::new(Metrics::default());
        let bus = Bus::new(config.subscriber_queue, metrics.clone());
        let store = Store::connect(
            StoreOptions {
                data_dir: config.data_dir.clone(),
                change_log_window: config.change_log_window,
                tables: config.tables.clone(),
                fail_persist_after: config.fail_fsync_after,
                address: config.store.clone(),
            },
            bus,
            metrics.clone(),
        )
        .await?;
        if let Some(seed) = &config.admin_bootstrap {
            let accounts = auth::Accounts::new(store.clone(), auth::Passwords::new());
            if accounts
                .create_first_admin(&seed.username, &seed.password)
                .await?
            {
                tracing::info!(username = %seed.username, "created the admin account from MARQUEE_ADMIN_PASSWORD");
            }
        }
        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.http,
                    source,
                })?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.http,
            source,
        })?;

        let mqtt_listener =
            TcpListener::bind(config.mqtt)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.mqtt,
                    source,
                })?;
        let mqtt_addr = mqtt_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.mqtt,
                source,
            })?;

        let mut origins = http::own_origins(http_addr);
        origins.extend(config.allowed_origins.iter().cloned());
        if let Some(url) = &config.public_url
            && let Ok(origin) = config::origin_of(url)
        {
            origins.push(origin);
        }
        let site = auth::Site {
            origins,
            loopback: http_addr.ip().is_loopback(),
            https: config
                .public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://")),
        };
        let guard = auth::Guard::new(store.clone(), config.access.clone(), site);
        if config.access.mode == access::Mode::Open {
            tracing::warn!(
                "auth mode \"open\": anyone who can reach the loopback listeners may read and write"
            );
        }
        let setup_link = guard.open_setup().await?.map(|secret| {
            let base = config.public_url.clone().unwrap_or_else(|| {
                let host = if http_addr.ip().is_unspecified() {
                    SocketAddr::new([127, 0, 0, 1].into(), http_addr.port())
                } else {
                    http_addr
                };
                format!("http://{host}")
            });
            format!("{base}/setup#{secret}")
        });

        let (stop, stopping) = watch::channel(false);
        let tasks = TaskTracker::new();
        let broker = Broker::new(
            store.clone(),
            config.mqtt_limits.clone(),
            guard.clone(),
            stopping.clone(),
            tasks.clone(),
        );
        let mqtt = tokio::spawn(broker.clone().serve(mqtt_listener));
        memory::spawn_trimmer(stopping.clone());
        let player = player::spawn(store.clone(), stopping.clone());
        let follower = devices::spawn(
            store.clone(),
            guard.clone(),
            config.frame_rate,
            stopping.clone(),
        );
        let devices = devices::Devices::new(
            store.clone(),
            guard.clone(),
            devices::BrokerAddress::new(
                mqtt_addr,
                config.public_host.as_deref(),
                config.public_mqtt_port,
            ),
        );
        let state = AppState::new(http::AppShared {
            store: store.clone(),
            metrics,
            body_limit: config.body_limit,
            shutdown: stopping.clone(),
            tasks: tasks.clone(),
            guard: guard.clone(),
            devices,
        });
        let router = http::router(state, leptos_options(&config, http_addr))
            .merge(mqtt::websocket::router(broker));
        let listener = http::LimitedListener::new(listener, config.http_max_connections);
        // The accept loop refuses requests for other host names (`http::host_refusal`).
        let http = tokio::spawn(http::serve(listener, router, guard, stopping));
        tracing::info!(%http_addr, %mqtt_addr, data_dir = %config.data_dir.display(), "marquee started");
        Ok(Self {
            http_addr,
            mqtt_addr,
            store,
            stop,
            http,
            mqtt,
            player,
            follower,
            tasks,
            setup_link,
        })
    }

    /// When no admin exists yet: the one-time link (valid 30 minutes, a new
    /// one at every start) that opens the page to create one.
    pub fn setup_link(&self) -> Option<&str> {
        self.setup_link.as_deref()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves, with the reason, if the store stopped because a commit or an
    /// fsync failed; the process must then exit non-zero.
    pub async fn failed(&self) -> String {
        self.store.failed().await
    }

    /// Stops accepting, ends streams, lets in-flight requests finish, waits
    /// (at most [`SHUTDOWN_GRACE`]) for every connection task's last writes
    /// (wills, session saves), commits every queued write, and closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.http.await;
        let _ = self.mqtt.await;
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "connection tasks still running after the shutdown grace period"
            );
        }
        // Before the store: its last advance is committed like any other write.
        let _ = self.player.await;
        let _ = self.follower.await;
        self.store.shutdown().await;
        tracing::info!(last_seq = self.store.last_seq(), "marquee stopped");
    }
}

fn leptos_options(config: &Config, addr: SocketAddr) -> LeptosOptions {
    let env = match std::env::var("LEPTOS_ENV").as_deref() {
        Ok("DEV") | Ok("dev") | Ok("development") => Env::DEV,
        _ => Env::PROD,
    };
    LeptosOptions::builder()
        .output_name("marquee")
        .site_root(config.site_dir.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .env(env)
        .build()
}
