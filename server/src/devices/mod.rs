//! Real signs over MQTT: pairing (a device account confined to the device's
//! topics, and a card with what the firmware's settings page asks for), and the
//! adapters that make AWTRIX 3 clocks, WLED matrices, Tasmota displays and
//! Marquee devices show what their sign shows. Not a protocol module: the
//! follower reads the bus and writes through the store like any client.

mod adapter;
mod awtrix;
mod follow;
pub mod frame;
mod marquee;
mod tasmota;
mod wled;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use app::device::{Device, DeviceKind, Pairing, check_full_topic, check_prefix};
use app::event::Origin;
use serde::Deserialize;
use serde_json::Value;

pub use follow::spawn;

use crate::auth::{AuthError, Guard, generate_password};
use crate::store::{DEVICES_TABLE, MAX_PAGE, Store, StoreError, WriteOp};

/// What `POST /api/devices/` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    pub kind: DeviceKind,
    #[serde(default)]
    pub name: String,
    /// The record id; made from the name when absent.
    pub id: Option<String>,
    pub prefix: Option<String>,
    pub full_topic: Option<String>,
    pub width: Option<u16>,
    pub height: Option<u16>,
    pub sign: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Taken(String),
    #[error("no device {0}")]
    NotFound(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pairs devices. Cheap to clone.
#[derive(Clone)]
pub struct Devices {
    store: Store,
    guard: Guard,
    /// Shared: every request clones the HTTP state, this with it.
    broker: Arc<BrokerAddress>,
}

/// Where devices on the network reach the broker.
#[derive(Clone, Debug)]
pub struct BrokerAddress {
    pub host: String,
    pub hosts: Vec<String>,
    pub port: u16,
    pub warning: Option<String>,
}

impl BrokerAddress {
    /// From the MQTT listener's address and the configured `public_host`
    /// and `public_mqtt_port` (behind a load balancer, its port is the one
    /// devices must use, not this node's listener's).
    pub fn new(listener: SocketAddr, public_host: Option<&str>, public_port: Option<u16>) -> Self {
        let port = public_port.unwrap_or(listener.port());
        let mut hosts: Vec<String> = Vec::new();
        if let Some(host) = public_host {
            hosts.push(host.to_owned());
        }
        let ip = listener.ip();
        if ip.is_unspecified() {
            hosts.extend(own_addresses().iter().map(IpAddr::to_string));
        } else if !ip.is_loopback() {
            hosts.push(ip.to_string());
        }
        let warning = if ip.is_loopback() {
            Some(format!(
                "The MQTT listener is on {listener}, which only this machine can reach. \
                 Start Marquee with --mqtt 0.0.0.0:{} (or [mqtt] listen in the config file) \
                 and set public_host to the name devices know this machine by.",
                listener.port()
            ))
        } else if hosts.is_empty() {
            Some(
                "Marquee could not find an address of this machine; set public_host to the \
                 name or address devices reach it at."
                    .into(),
            )
        } else {
            None
        };
        if hosts.is_empty() {
            hosts.push(ip.to_string());
        }
        let host = hosts.first().cloned().unwrap_or_default();
        Self {
            host,
            hosts,
            port,
            warning,
        }
    }
}

/// This machine's addresses on the network: the ones its default routes leave
/// from. Connecting a UDP socket sends nothing; it only picks the route.
fn own_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    for (bind, probe) in [("0.0.0.0:0", "192.0.2.1:9"), ("[::]:0", "[2001:db8::1]:9")] {
        let Ok(socket) = UdpSocket::bind(bind) else {
            continue;
        };
        if socket.connect(probe).is_ok()
            && let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            found.push(local.ip());
        }
    }
    found
}

impl Devices {
    pub fn new(store: Store, guard: Guard, broker: BrokerAddress) -> Self {
        Self {
            store,
            guard,
            broker: Arc::new(broker),
        }
    }

    /// Creates a device: its account (a generated password, its topics alone)
    /// and its record. The answer is the only time the password is shown.
    pub async fn pair(&self, request: PairRequest) -> Result<Pairing, PairError> {
        let kind = request.kind;
        let id = match request.id {
            Some(id) => id,
            None => new_id(&request.name, kind)?,
        };
        crate::store::validate_record_id(DEVICES_TABLE, &id)?;
        let prefix = request.prefix.unwrap_or_else(|| kind.default_prefix(&id));
        check_prefix(&prefix).map_err(|e| PairError::Invalid(format!("prefix: {e}")))?;
        if prefix.is_empty() {
            return Err(PairError::Invalid("prefix: must not be empty".into()));
        }
        let full_topic = request.full_topic.unwrap_or_default();
        check_full_topic(&full_topic)
            .map_err(|e| PairError::Invalid(format!("full_topic: {e}")))?;
        let (default_width, default_height) = kind.default_size();
        let device = Device {
            name: request.name,
            kind,
            username: device_username(&id),
            prefix: prefix.clone(),
            full_topic,
            sign: request.sign,
            width: request.width.unwrap_or(default_width),
            height: request.height.unwrap_or(default_height),
            ..Device::default()
        };
        device
            .validate()
            .map_err(|e| PairError::Invalid(e.to_string()))?;
        // A device's topics must never be records: `signs/#` would hand it every sign.
        for grant in adapter::scope(&device) {
            let first = grant.filter.split('/').next().unwrap_or_default();
            if self.store.table_info(first).is_some() {
                return Err(PairError::Invalid(format!(
                    "prefix: {prefix} would give the device the table {first}; choose another"
                )));
            }
        }
        self.check_unused(&id, &device).await?;
        let password = generate_password()?;
        let accounts = self.guard.accounts();
        accounts
            .create_device(&device.username, &id, adapter::scope(&device), &password)
            .await?;
        let op = WriteOp::Put {
            table: DEVICES_TABLE.to_owned(),
            id: Some(id.clone()),
            value: device.to_json(),
            if_match: Some(0),
        };
        if let Err(e) = self.store.write(op, Origin::Rest).await {
            // No account without its device.
            let _ = accounts.delete_device(&device.username).await;
            return Err(e.into());
        }
        tracing::info!(device = %id, kind = %kind, username = %device.username, "device paired");
        Ok(self.card(&id, &device, Some(password)))
    }

    /// Err if the id, user name or prefix is another device's already: two
    /// devices on one prefix would each reach the other's topics.
    async fn check_unused(&self, id: &str, device: &Device) -> Result<(), PairError> {
        let mut after = None;
        loop {
            let page = self.store.list(DEVICES_TABLE, after, MAX_PAGE).await?;
            for record in &page.items {
                if record.id == id {
                    return Err(PairError::Taken(format!("a device {id} exists already")));
                }
                let clash = Device::from_json(&record.value).is_ok_and(|other| {
                    overlaps(&other.prefix, &device.prefix) || other.username == device.username
                });
                if clash {
                    return Err(PairError::Taken(format!(
                        "device {} already uses the prefix {} or the user name {}",
                        record.id, device.prefix, device.username
                    )));
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// A new password for a device; its old one, and any connection made with
    /// it, stop working at once.
    pub async fn regenerate(&self, id: &str) -> Result<Pairing, PairError> {
        let device = self.device(id).await?;
        let accounts = self.guard.accounts();
        let password = generate_password()?;
        match accounts.get(&device.username)? {
            Some(account) if account.device.as_deref() == Some(id) => {
                accounts.set_password(&device.username, &password).await?;
            }
            _ => {
                // Entered by hand, or its account went: make one, and name it
                // in the record.
                accounts
                    .create_device(&device.username, id, adapter::scope(&device), &password)
                    .await?;
                let op = WriteOp::Patch {
                    table: DEVICES_TABLE.to_owned(),
                    id: id.to_owned(),
                    patch: serde_json::json!({"username": device.username}),
                    if_match: None,
                };
                self.store.write(op, Origin::Rest).await?;
            }
        }
        Ok(self.card(id, &device, Some(password)))
    }

    /// The pairing card again, without the password.
    pub async fn pairing(&self, id: &str) -> Result<Pairing, PairError> {
        let device = self.device(id).await?;
        Ok(self.card(id, &device, None))
    }

    async fn device(&self, id: &str) -> Result<Device, PairError> {
        let record = self
            .store
            .get(DEVICES_TABLE, id)
            .await?
            .ok_or_else(|| PairError::NotFound(id.to_owned()))?;
        let mut device =
            Device::from_json(&record.value).map_err(|e| PairError::Invalid(e.to_string()))?;
        if device.username.is_empty() {
            // Entered by hand: the user name its first password will make.
            device.username = device_username(id);
        }
        Ok(device)
    }

    fn card(&self, id: &str, device: &Device, password: Option<String>) -> Pairing {
        Pairing {
            id: id.to_owned(),
            kind: device.kind,
            username: device.username.clone(),
            password,
            prefix: device.prefix.clone(),
            broker_host: self.broker.host.clone(),
            broker_port: self.broker.port,
            broker_hosts: self.broker.hosts.clone(),
            broker_warning: self.broker.warning.clone(),
        }
    }
}

/// Whether one prefix holds the other's topics (`wled/hall` and `wled/hall/x`).
fn overlaps(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    !a.is_empty() && !b.is_empty() && (within(a, b) || within(b, a))
}

/// A device's MQTT user name: `dev-` and its id, within the user-name rules.
fn device_username(id: &str) -> String {
    let slug: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(crate::auth::MAX_USERNAME_LEN - 4)
        .collect();
    format!("dev-{slug}")
}

/// An id from the name (lower case, dashes) and four random hex digits, so
/// two kitchens never clash.
fn new_id(name: &str, kind: DeviceKind) -> Result<String, PairError> {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 32 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let base = if slug.is_empty() { kind.as_str() } else { slug };
    let mut random = [0u8; 2];
    getrandom::fill(&mut random).map_err(|e| PairError::Invalid(e.to_string()))?;
    Ok(format!("{base}-{:04x}", u16::from_be_bytes(random)))
}

/// A request body as a [`PairRequest`], with the reason when it is not one.
pub fn pair_request(value: Value) -> Result<PairRequest, PairError> {
    serde_json::from_value(value).map_err(|e| PairError::Invalid(e.to_string()))
}
