//! What the broker refused, told to whoever watches (the device adapters show
//! a device's refusals on its card). A bounded broadcast: a watcher that falls
//! behind misses refusals rather than holding memory or slowing the broker.

use std::net::SocketAddr;

use tokio::sync::broadcast;

/// Refusals kept for a slow watcher before it starts missing some.
const BACKLOG: usize = 256;

/// One refused CONNECT, PUBLISH or SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The account's user name; `None` for a client that gave none.
    pub username: Option<String>,
    pub client_id: String,
    pub peer: Option<SocketAddr>,
    pub what: RefusedAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusedAction {
    /// A CONNECT, with the will topic it carried (firmwares put their own
    /// prefix there, which tells whose device it is).
    Connect {
        will_topic: Option<String>,
    },
    Publish {
        topic: String,
    },
    Subscribe {
        filter: String,
    },
}

/// The sending side, kept by the guard.
#[derive(Debug)]
pub struct Refusals(broadcast::Sender<Refused>);

impl Refusals {
    pub fn new() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }

    /// Tells every watcher; nobody watching is fine.
    pub fn report(&self, refused: Refused) {
        let _ = self.0.send(refused);
    }

    pub fn watch(&self) -> broadcast::Receiver<Refused> {
        self.0.subscribe()
    }
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}
