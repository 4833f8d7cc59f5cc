//! An in-process UDP relay between agents and the control plane (this kernel has no netem).
//!
//! Each client address gets its own upstream socket, like a NAT. The relay can be switched off
//! (every datagram in both directions dropped) and on again, which is a link cut without
//! touching either end. Loss, delay and reordering arrive with the fault-injection work.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A running relay.
pub struct Relay {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let address = front.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicU64::new(0));
        let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let task = {
            let up = up.clone();
            let dropped = dropped.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_536];
                loop {
                    let Ok((length, client)) = front.recv_from(&mut buffer).await else {
                        return;
                    };
                    if !up.load(Ordering::SeqCst) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
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
                                let up = up.clone();
                                let dropped = dropped.clone();
                                let reader = socket.clone();
                                tokio::spawn(async move {
                                    let mut buffer = vec![0u8; 65_536];
                                    while let Ok((length, _)) = reader.recv_from(&mut buffer).await
                                    {
                                        if up.load(Ordering::SeqCst) {
                                            let _ = front.send_to(&buffer[..length], client).await;
                                        } else {
                                            dropped.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                });
                                socket
                            }
                        }
                    };
                    let _ = back.send_to(&buffer[..length], upstream).await;
                }
            })
        };
        Ok(Relay {
            address,
            up,
            dropped,
            task,
        })
    }

    /// Cuts (`false`) or restores (`true`) the link.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Datagrams dropped while the link was cut.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
