//! An in-process UDP relay between agents and the control plane, with the impairments of a bad
//! WAN (this kernel has no netem): loss, delay, jitter, duplication, reordering, and partitions
//! (the link cut in both directions).
//!
//! Each client address gets its own upstream socket, like a NAT. Both directions are impaired
//! the same way. Only loopback is used: the relay binds 127.0.0.1 and forwards to the upstream
//! address it is given, which callers take from a control plane bound on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How the link misbehaves (per direction, per datagram).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter`.
    pub jitter: Duration,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back an extra `delay` (so later ones overtake it).
    pub reorder: f64,
}

/// What the relay did, for assertions.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub partitioned: AtomicU64,
}

struct Shared {
    up: AtomicBool,
    impairment: Mutex<Impairment>,
    stats: RelayStats,
}

impl Shared {
    /// Sends `datagram` through `socket` to `to`, impaired; returns at once.
    fn forward(self: &Arc<Self>, socket: &Arc<UdpSocket>, datagram: &[u8], to: SocketAddr) {
        if !self.up.load(Ordering::SeqCst) {
            self.stats.partitioned.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let impairment = *self
            .impairment
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if impairment.loss > 0.0 && rand::random::<f64>() < impairment.loss {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if impairment.duplicate > 0.0 && rand::random::<f64>() < impairment.duplicate {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let mut wait = impairment.delay + impairment.jitter.mul_f64(rand::random::<f64>());
        if impairment.reorder > 0.0 && rand::random::<f64>() < impairment.reorder {
            wait += impairment.delay.max(Duration::from_millis(20));
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        if wait.is_zero() {
            for _ in 0..copies {
                let _ = socket.try_send_to(datagram, to);
            }
            return;
        }
        let socket = socket.clone();
        let datagram = datagram.to_vec();
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // A partition that began while the datagram was in flight takes it too.
            if !shared.up.load(Ordering::SeqCst) {
                shared.stats.partitioned.fetch_add(1, Ordering::Relaxed);
                return;
            }
            for _ in 0..copies {
                let _ = socket.send_to(&datagram, to).await;
            }
        });
    }
}

/// A running relay.
pub struct Relay {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and forwards to `upstream` without impairment.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        Relay::start_with(upstream, Impairment::default()).await
    }

    /// Listens on `127.0.0.1:0` and forwards to `upstream` with `impairment`.
    pub async fn start_with(
        upstream: SocketAddr,
        impairment: Impairment,
    ) -> std::io::Result<Relay> {
        assert!(
            upstream.ip().is_loopback(),
            "the relay only forwards to loopback, not {upstream}"
        );
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let address = front.local_addr()?;
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            impairment: Mutex::new(impairment),
            stats: RelayStats::default(),
        });
        let clients: Arc<tokio::sync::Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_536];
                loop {
                    let Ok((length, client)) = front.recv_from(&mut buffer).await else {
                        return;
                    };
                    let back = {
                        let mut clients = clients.lock().await;
                        match clients.get(&client) {
                            Some(socket) => socket.clone(),
                            None => {
                                let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                                    continue;
                                };
                                let socket = Arc::new(socket);
                                clients.insert(client, socket.clone());
                                // Return path: upstream → this client.
                                let front = front.clone();
                                let shared = shared.clone();
                                let reader = socket.clone();
                                tokio::spawn(async move {
                                    let mut buffer = vec![0u8; 65_536];
                                    while let Ok((length, _)) = reader.recv_from(&mut buffer).await
                                    {
                                        shared.forward(&front, &buffer[..length], client);
                                    }
                                });
                                socket
                            }
                        }
                    };
                    shared.forward(&back, &buffer[..length], upstream);
                }
            })
        };
        Ok(Relay {
            address,
            shared,
            task,
        })
    }

    /// Cuts (`false`) or restores (`true`) the link: a partition in both directions.
    pub fn set_up(&self, up: bool) {
        self.shared.up.store(up, Ordering::SeqCst);
    }

    /// Changes the impairment from now on.
    pub fn set_impairment(&self, impairment: Impairment) {
        *self
            .shared
            .impairment
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = impairment;
    }

    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }

    /// Datagrams dropped by loss or partition.
    pub fn dropped(&self) -> u64 {
        self.shared.stats.dropped.load(Ordering::Relaxed)
            + self.shared.stats.partitioned.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
