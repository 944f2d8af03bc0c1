//! Configuration: command-line options, each also an environment variable
//! `MARQUEE_*`, over an optional TOML file, over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::access::{Access, AclRule, Mode};
use crate::mqtt::Limits;
use crate::store::{StoreAddress, StoreAddressError, TableDecl};

/// Everything `marquee serve` needs, after merging all sources.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    /// Where the built web app (`pkg/`, CSS, assets) is served from.
    pub site_dir: PathBuf,
    pub change_log_window: u64,
    pub body_limit: usize,
    /// How far one subscriber's queue may fill before it is cut off as too slow.
    pub subscriber_queue: crate::bus::QueueLimit,
    /// Open HTTP connections (streams included) at most; more get a 503.
    pub http_max_connections: usize,
    pub tables: Vec<TableDecl>,
    /// The broker's limits.
    pub mqtt_limits: Limits,
    /// Who may publish and subscribe to what.
    pub access: Access,
    /// The address people reach this server at, when not the listener's
    /// own (a reverse proxy, a host name): setup links use it, and browser
    /// pages from it are trusted.
    pub public_url: Option<String>,
    /// More origins whose pages may use a session cookie (`http://host:port`).
    pub allowed_origins: Vec<String>,
    /// The host name or address devices on the network reach the broker at
    /// (shown on pairing cards); without it, this machine's own addresses.
    pub public_host: Option<String>,
    /// The port devices reach the broker at, when not the listener's own:
    /// behind a load balancer or a port forward, the one it listens on.
    pub public_mqtt_port: Option<u16>,
    /// Most frames per second sent to a device that takes exact frames.
    pub frame_rate: u32,
    /// The admin to create at start if none exists (`MARQUEE_ADMIN_USER`,
    /// `MARQUEE_ADMIN_PASSWORD`: environment only, never a command-line
    /// flag that `ps` would show).
    pub admin_bootstrap: Option<AdminBootstrap>,
    /// Test hook (from `MARQUEE_FAULT_FAIL_FSYNC_AFTER` only): after this many
    /// commits the next fsync fails, to exercise the failure path.
    #[doc(hidden)]
    pub fail_fsync_after: Option<u64>,
    /// Where the store lives: `embedded` (fjall in `data_dir`) or an etcd
    /// cluster shared with other nodes (`data_dir` is then this node's cache).
    pub store: StoreAddress,
}

/// An admin account to create at start when there is none.
#[derive(Clone)]
pub struct AdminBootstrap {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AdminBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBootstrap")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

pub const DEFAULT_HTTP: &str = "127.0.0.1:3000";
pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";
pub const DEFAULT_CHANGE_LOG_WINDOW: u64 = 1_000_000;
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_FRAME_RATE: u32 = 10;

#[derive(Debug, Parser)]
#[command(
    name = "marquee",
    version,
    about = "Marquee: a sign and pub/sub runtime. One process stores records durably and serves them over REST, Server-Sent Events, WebSockets and MQTT, with a web app for LED signs.",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "With no subcommand, `marquee` runs `serve`. Every option can also be set as an environment variable (shown in brackets) or in the TOML file given by --config; the command line wins over the environment, which wins over the file. MARQUEE_ADMIN_PASSWORD (and MARQUEE_ADMIN_USER, default admin) creates the first admin if none exists.\n\nConfig file example:\n  data_dir = \"./data\"\n  http = \"127.0.0.1:3000\"\n  public_url = \"https://signs.example.com\"\n  allowed_origins = [\"http://signs.local:3000\"]\n  change_log_window = 1000000\n  public_host = \"signs.local\"  # what devices type as Broker\n  public_mqtt_port = 1883       # and as its port (behind a load balancer)\n\n  [auth]\n  mode = \"accounts\"      # or \"open\": no sign-in, loopback only\n\n  [mqtt]\n  listen = \"0.0.0.0:1883\"\n  max_packet_size = 1048576\n\n  [[acl]]                 # deny rules first, then roles, then allow rules\n  filter = \"awtrix/%u/#\"   # %u = user name, %c = client id (whole levels)\n  role = \"device\"         # or user = \"name\", or anonymous = true\n  publish = true\n  subscribe = true\n\n  [devices]\n  frame_rate = 10         # most frames/s to Marquee devices\n\n  [[tables]]\n  name = \"Sensors\"\n  schema = { type = \"object\", required = [\"temp\"], properties = { temp = { type = \"number\" } } }"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Accounts, on the data directory of a stopped server.
    Admin(crate::admin::AdminArgs),
    /// A Marquee device in the terminal: pair a "Marquee device", then run this
    /// with the card's values and watch it follow its sign.
    DeviceSim(crate::device_sim::DeviceSimArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Where the store lives: `embedded` (fjall in the data dir), or
    /// `etcd://host:port,host:port,…[/prefix/]` to share one store with other
    /// Marquee nodes (the data dir is then this node's cache) [default: embedded]
    #[arg(long, env = "MARQUEE_STORE", value_name = "STORE")]
    pub store: Option<StoreAddress>,
    /// Where the store keeps its files [default: ./data]
    #[arg(long, env = "MARQUEE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for HTTP: REST, SSE, WebSockets and the web app [default: 127.0.0.1:3000]; port 0 picks a free port
    #[arg(long, env = "MARQUEE_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Address for the MQTT broker [default: 127.0.0.1:1883]
    #[arg(long, env = "MARQUEE_MQTT", value_name = "ADDR")]
    pub mqtt: Option<SocketAddr>,
    /// A TOML file with settings and [[tables]] declarations
    #[arg(long, env = "MARQUEE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The built web app [default: ../site next to the executable, else ./target/site]
    #[arg(long, env = "MARQUEE_SITE_DIR", value_name = "DIR")]
    pub site_dir: Option<PathBuf>,
    /// How many recent changes are kept for clients to resume from [default: 1000000]
    #[arg(long, env = "MARQUEE_CHANGE_LOG_WINDOW", value_name = "N")]
    pub change_log_window: Option<u64>,
    /// Largest request body or WebSocket message, in bytes [default: 1048576]
    #[arg(long, env = "MARQUEE_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<usize>,
    /// Changes queued for one subscriber before it is cut off as too slow [default: 4096]
    #[arg(long, env = "MARQUEE_SUBSCRIBER_QUEUE", value_name = "N")]
    pub subscriber_queue: Option<usize>,
    /// Bytes of changes queued for one subscriber before it is cut off as too slow [default: 67108864]
    #[arg(long, env = "MARQUEE_SUBSCRIBER_QUEUE_BYTES", value_name = "BYTES")]
    pub subscriber_queue_bytes: Option<usize>,
    /// Open HTTP connections at most, streams included; more are answered 503 [default: 10000]
    #[arg(long, env = "MARQUEE_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// `accounts` (the default: everyone signs in) or `open` (anyone may
    /// connect; only allowed when every listener is on loopback).
    #[arg(long, env = "MARQUEE_AUTH_MODE", value_name = "MODE")]
    pub auth_mode: Option<Mode>,
    /// The URL people open to reach this server, e.g. https://signs.example.com.
    #[arg(long, env = "MARQUEE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The host name or address devices reach the MQTT broker at, shown on pairing cards [default: this machine's address]
    #[arg(long, env = "MARQUEE_PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,
    /// The port devices reach the MQTT broker at, shown on pairing cards, when not the listener's (a load balancer's, a port forward's) [default: the --mqtt port]
    #[arg(long, env = "MARQUEE_PUBLIC_MQTT_PORT", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub public_mqtt_port: Option<u16>,
}

/// The TOML file: the same settings as the options, plus table declarations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub store: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub site_dir: Option<PathBuf>,
    pub change_log_window: Option<u64>,
    pub body_limit: Option<usize>,
    pub subscriber_queue: Option<usize>,
    pub subscriber_queue_bytes: Option<usize>,
    pub http_max_connections: Option<usize>,
    #[serde(default)]
    pub tables: Vec<TableDecl>,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub acl: Vec<AclRule>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub auth: AuthSection,
    pub public_host: Option<String>,
    pub public_mqtt_port: Option<u16>,
    #[serde(default)]
    pub devices: DevicesSection,
}

/// `[devices]`: how paired devices are driven.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    /// Most frames per second to a device taking exact frames (1–60, default 10).
    pub frame_rate: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub mode: Option<Mode>,
}

/// `[mqtt]`: the broker's address, whether anonymous clients may connect,
/// and its limits (each defaults to [`Limits::default`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    pub listen: Option<SocketAddr>,
    pub allow_anonymous: Option<bool>,
    pub max_packet_size: Option<usize>,
    pub max_topic_length: Option<usize>,
    pub max_topic_levels: Option<usize>,
    pub max_subscriptions: Option<usize>,
    pub max_inflight: Option<u16>,
    pub max_connections: Option<usize>,
    pub max_sessions: Option<usize>,
    pub persistent_client_expiration_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub max_keep_alive: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub sys_interval_secs: Option<u64>,
}

impl MqttSection {
    fn limits(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let limits = Limits {
            max_packet_size: self.max_packet_size.unwrap_or(d.max_packet_size),
            max_topic_length: self.max_topic_length.unwrap_or(d.max_topic_length),
            max_topic_levels: self.max_topic_levels.unwrap_or(d.max_topic_levels),
            max_subscriptions: self.max_subscriptions.unwrap_or(d.max_subscriptions),
            max_inflight: self.max_inflight.unwrap_or(d.max_inflight),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_sessions: self.max_sessions.unwrap_or(d.max_sessions),
            max_session_expiry: self
                .persistent_client_expiration_secs
                .map_or(d.max_session_expiry, std::time::Duration::from_secs),
            connect_timeout: self
                .connect_timeout_secs
                .map_or(d.connect_timeout, std::time::Duration::from_secs),
            max_keep_alive: self.max_keep_alive.unwrap_or(d.max_keep_alive),
            topic_alias_maximum: self.topic_alias_maximum.unwrap_or(d.topic_alias_maximum),
            sys_interval: self
                .sys_interval_secs
                .map_or(d.sys_interval, std::time::Duration::from_secs),
        };
        let invalid = |what: &str| Err(ConfigError::Invalid(format!("[mqtt] {what}")));
        if limits.max_packet_size < 64 || limits.max_packet_size > crate::mqtt::MAX_PACKET_SIZE {
            return invalid("max_packet_size must be between 64 and 268435460");
        }
        if limits.max_inflight == 0 {
            return invalid("max_inflight must be at least 1");
        }
        if limits.max_topic_length == 0 || limits.max_topic_levels == 0 {
            return invalid("max_topic_length and max_topic_levels must be at least 1");
        }
        if limits.sys_interval.is_zero() {
            return invalid("sys_interval_secs must be at least 1");
        }
        if limits.max_session_expiry.is_zero()
            || limits.max_session_expiry.as_secs() >= u64::from(u32::MAX)
        {
            return invalid("persistent_client_expiration_secs must be between 1 and 4294967294");
        }
        if limits.max_keep_alive == 0 {
            return invalid("max_keep_alive must be at least 1 second");
        }
        Ok(limits)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid config file: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    /// Merges the options with the config file they name and the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let parse = |s: &str| {
            s.parse::<SocketAddr>()
                .map_err(|e| ConfigError::Invalid(e.to_string()))
        };
        let store = match (self.store, file.store) {
            (Some(store), _) => store,
            (None, Some(text)) => text
                .parse()
                .map_err(|e: StoreAddressError| ConfigError::Invalid(e.to_string()))?,
            (None, None) => StoreAddress::Embedded,
        };
        let config = Config {
            store,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            http: match self.http.or(file.http) {
                Some(addr) => addr,
                None => parse(DEFAULT_HTTP)?,
            },
            mqtt: match self.mqtt.or(file.mqtt.listen) {
                Some(addr) => addr,
                None => parse(DEFAULT_MQTT)?,
            },
            site_dir: self
                .site_dir
                .or(file.site_dir)
                .unwrap_or_else(default_site_dir),
            change_log_window: self
                .change_log_window
                .or(file.change_log_window)
                .unwrap_or(DEFAULT_CHANGE_LOG_WINDOW),
            body_limit: self
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            subscriber_queue: crate::bus::QueueLimit {
                events: self
                    .subscriber_queue
                    .or(file.subscriber_queue)
                    .unwrap_or(crate::bus::DEFAULT_QUEUE),
                bytes: self
                    .subscriber_queue_bytes
                    .or(file.subscriber_queue_bytes)
                    .unwrap_or(crate::bus::DEFAULT_QUEUE_BYTES),
            },
            http_max_connections: self
                .http_max_connections
                .or(file.http_max_connections)
                .unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS),
            mqtt_limits: file.mqtt.limits()?,
            access: Access::new(
                self.auth_mode.or(file.auth.mode).unwrap_or_default(),
                file.mqtt.allow_anonymous.unwrap_or(true),
                file.acl,
            )
            .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            public_url: self
                .public_url
                .or(file.public_url)
                .map(|url| origin_of(&url).map(|_| url.trim_end_matches('/').to_owned()))
                .transpose()?,
            allowed_origins: file
                .allowed_origins
                .iter()
                .map(|o| {
                    origin_of(o).and_then(|origin| {
                        if origin == *o {
                            Ok(origin)
                        } else {
                            Err(ConfigError::Invalid(format!(
                                "allowed_origins: '{o}' is not an origin (scheme://host[:port], no path)"
                            )))
                        }
                    })
                })
                .collect::<Result<_, _>>()?,
            tables: file.tables,
            public_host: self
                .public_host
                .or(file.public_host)
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty()),
            public_mqtt_port: match self.public_mqtt_port.or(file.public_mqtt_port) {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "public_mqtt_port must be between 1 and 65535".into(),
                    ));
                }
                port => port,
            },
            frame_rate: match file.devices.frame_rate {
                None => DEFAULT_FRAME_RATE,
                Some(rate @ 1..=60) => rate,
                Some(rate) => {
                    return Err(ConfigError::Invalid(format!(
                        "devices.frame_rate: {rate} is not between 1 and 60"
                    )));
                }
            },
            admin_bootstrap: std::env::var("MARQUEE_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .map(|password| AdminBootstrap {
                    username: std::env::var("MARQUEE_ADMIN_USER")
                        .ok()
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| "admin".into()),
                    password,
                }),
            fail_fsync_after: std::env::var(crate::store::FAULT_ENV)
                .ok()
                .and_then(|n| n.parse().ok()),
        };
        if config.change_log_window == 0 {
            return Err(ConfigError::Invalid(
                "change_log_window must be at least 1".into(),
            ));
        }
        if config.http_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "http_max_connections must be at least 1".into(),
            ));
        }
        if config.body_limit < 1024 {
            return Err(ConfigError::Invalid(
                "body_limit must be at least 1024 bytes".into(),
            ));
        }
        Ok(config)
    }
}

impl Config {
    /// Defaults, with the given data directory and HTTP address (for tests and
    /// embedding); MQTT listens on the HTTP address's IP, on a free port.
    pub fn new(data_dir: impl Into<PathBuf>, http: SocketAddr) -> Result<Self, ConfigError> {
        ServeArgs {
            data_dir: Some(data_dir.into()),
            http: Some(http),
            mqtt: Some(SocketAddr::new(http.ip(), 0)),
            ..ServeArgs::default()
        }
        .resolve()
    }
}

/// The origin (`scheme://host[:port]`) of an http(s) URL.
pub fn origin_of(url: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::Invalid(format!("'{url}' is not an http:// or https:// URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err(bad());
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// A release build lives at `target/release/marquee` and its site at
/// `target/site`: look next to the executable first.
fn default_site_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(|p| p.join("site")))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("target/site"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_apply_and_options_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marquee.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:4000\"\nchange_log_window = 50\n[[tables]]\nname = \"Sensors\"\nschema = { required = [\"temp\"] }\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            change_log_window: Some(7),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.http, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(config.change_log_window, 7);
        assert_eq!(config.tables.len(), 1);
        assert_eq!(config.tables[0].name, "Sensors");
        assert_eq!(config.mqtt, DEFAULT_MQTT.parse().unwrap());
    }

    /// A deployment behind a load balancer names the broker port devices
    /// use; the flag wins over the file, and port 0 is refused.
    #[test]
    fn the_public_mqtt_port_comes_from_the_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marquee.toml");
        std::fs::write(&path, "public_mqtt_port = 8883\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert_eq!(from_file.resolve().unwrap().public_mqtt_port, Some(8883));
        let flag = ServeArgs {
            config: Some(path),
            public_mqtt_port: Some(1884),
            ..ServeArgs::default()
        };
        assert_eq!(flag.resolve().unwrap().public_mqtt_port, Some(1884));
        std::fs::write(dir.path().join("zero.toml"), "public_mqtt_port = 0\n").unwrap();
        let zero = ServeArgs {
            config: Some(dir.path().join("zero.toml")),
            ..ServeArgs::default()
        };
        assert!(matches!(zero.resolve(), Err(ConfigError::Invalid(_))));
    }

    /// The example `--help` prints is a config file that loads (a key
    /// written under the wrong `[section]` would be refused).
    #[test]
    fn the_help_example_is_a_valid_config_file() {
        use clap::CommandFactory;
        let help = Cli::command()
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        let (_, example) = help
            .split_once("Config file example:\n")
            .expect("an example in --help");
        let text: String = example
            .lines()
            .map(|line| line.strip_prefix("  ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let file: FileConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(file.public_host.as_deref(), Some("signs.local"));
        assert_eq!(file.public_mqtt_port, Some(1883));
    }

    /// The README's config file example loads, every key in its section.
    #[test]
    fn the_readme_example_is_a_valid_config_file() {
        let readme = include_str!("../../README.md");
        let (_, after) = readme
            .split_once("### Config file\n\n```toml\n")
            .expect("a config file example in the README");
        let (text, _) = after.split_once("```").expect("the example's end");
        let file: FileConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(file.subscriber_queue_bytes, Some(64 << 20));
        assert_eq!(file.subscriber_queue, Some(crate::bus::DEFAULT_QUEUE));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "htp = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }
}
