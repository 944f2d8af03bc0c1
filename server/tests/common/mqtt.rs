//! A raw MQTT client on our own codec, over TCP or WebSocket (`/mqtt`), for
//! tests that need exact packets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use marquee::mqtt::{
    ConnAck, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    ReasonCode, Subscribe, Subscription, decode_as_client, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::WsStream;

pub const WAIT: Duration = Duration::from_secs(5);

enum Link {
    Tcp(TcpStream),
    Ws(Box<WsStream>),
}

pub struct Raw {
    link: Link,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

pub fn connect_packet(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 30,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

pub fn publish(topic: &str, qos: QoS, id: u16, retain: bool, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| id.try_into().unwrap()),
        payload: Bytes::copy_from_slice(payload),
        properties: PublishProperties::default(),
    })
}

impl Raw {
    /// A TCP connection, before CONNECT.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        // As MQTT clients do: a small packet goes now, not after the last one's ACK.
        stream.set_nodelay(true).unwrap();
        Self {
            link: Link::Tcp(stream),
            buf: BytesMut::new(),
            version,
        }
    }

    /// A WebSocket connection to `ws_url` (…/mqtt) with subprotocol `mqtt`, before CONNECT.
    pub async fn open_ws(ws_url: &str, version: ProtocolVersion) -> Self {
        let mut request = ws_url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
        Self {
            link: Link::Ws(Box::new(ws)),
            buf: BytesMut::new(),
            version,
        }
    }

    /// An already connected TCP stream (say, one bound to another loopback
    /// address), before CONNECT.
    pub fn from_tcp(stream: TcpStream, version: ProtocolVersion) -> Self {
        Self {
            link: Link::Tcp(stream),
            buf: BytesMut::new(),
            version,
        }
    }

    /// A WebSocket connection made from `request` (headers of the caller's
    /// choosing: Cookie, Origin, Host), with subprotocol `mqtt`, before
    /// CONNECT; the handshake's error (a refused upgrade) as it is.
    pub async fn open_ws_request(
        mut request: tokio_tungstenite::tungstenite::handshake::client::Request,
        version: ProtocolVersion,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self {
            link: Link::Ws(Box::new(ws)),
            buf: BytesMut::new(),
            version,
        })
    }

    /// Sends CONNECT on an opened connection and returns the CONNACK, or
    /// `None` if the server closed (or said nothing for 5 s) instead.
    pub async fn try_handshake(&mut self, connect: Connect) -> Option<ConnAck> {
        self.send(&Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => Some(ack),
            _ => None,
        }
    }

    /// Connects over TCP and returns the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let raw = Self::open(addr, connect.protocol).await;
        raw.handshake(connect).await
    }

    /// Connects over WebSocket and returns the CONNACK.
    pub async fn connect_ws(ws_url: &str, connect: Connect) -> (Self, ConnAck) {
        let raw = Self::open_ws(ws_url, connect.protocol).await;
        raw.handshake(connect).await
    }

    async fn handshake(mut self, connect: Connect) -> (Self, ConnAck) {
        self.send(&Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => (self, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).unwrap();
        self.send_bytes(&out).await;
    }

    /// Sends a packet; `false` if the connection refused it (reset or closed),
    /// which a real client takes as the end of the connection.
    pub async fn try_send(&mut self, packet: &Packet) -> bool {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).unwrap();
        match &mut self.link {
            Link::Tcp(stream) => stream.write_all(&out).await.is_ok(),
            Link::Ws(ws) => ws.send(Message::Binary(out.freeze())).await.is_ok(),
        }
    }

    /// Sends bytes as they are (the server may already have closed: not an error).
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::Tcp(stream) => {
                let _ = stream.write_all(bytes).await;
            }
            Link::Ws(ws) => {
                let _ = ws
                    .send(Message::Binary(Bytes::copy_from_slice(bytes)))
                    .await;
            }
        }
    }

    /// The next packet, or `None` if the server closed the connection (or said nothing for 5 s).
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT).await
    }

    pub async fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(packet) = decode_as_client(&mut self.buf, self.version, 1 << 24).unwrap() {
                return Some(packet);
            }
            if !self.read_until(deadline).await? {
                return None;
            }
        }
    }

    /// Reads more; `Some(false)` when the connection closed, `None` at the deadline.
    async fn read_until(&mut self, deadline: tokio::time::Instant) -> Option<bool> {
        match &mut self.link {
            Link::Tcp(stream) => {
                match tokio::time::timeout_at(deadline, stream.read_buf(&mut self.buf)).await {
                    Ok(Ok(n)) => Some(n > 0),
                    Ok(Err(_)) => Some(false),
                    Err(_) => None,
                }
            }
            Link::Ws(ws) => match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Binary(bytes)))) => {
                    self.buf.extend_from_slice(&bytes);
                    Some(true)
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => Some(true),
                Ok(_) => Some(false),
                Err(_) => None,
            },
        }
    }

    /// Whether the server closes the connection (within 5 s), and what it sent first.
    pub async fn closed(&mut self) -> (bool, Vec<Packet>) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            while let Ok(Some(packet)) = decode_as_client(&mut self.buf, self.version, 1 << 24) {
                seen.push(packet);
            }
            match self.read_until(deadline).await {
                Some(true) => {}
                Some(false) => return (true, seen),
                None => return (false, seen),
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        id: u16,
        subscriptions: Vec<Subscription>,
    ) -> Vec<ReasonCode> {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: id.try_into().unwrap(),
            subscriptions,
            properties: Default::default(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => ack.reason_codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}
