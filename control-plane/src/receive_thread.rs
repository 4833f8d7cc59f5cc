//! The QUIC endpoint's receive loop on a thread of its own.
//!
//! quinn drives an endpoint with one task that reads the UDP socket and routes each datagram
//! to its connection. To stay fair to other tasks it yields after about 50 µs of work, and on
//! a busy runtime it then waits behind every other task that is ready — with 18,000 sessions,
//! that is hundreds of connection and session tasks. While it waits the kernel's receive buffer
//! fills and overflows: at province scale the control plane dropped over a million datagrams a
//! run, heartbeats among them, sessions were closed for silence, and their agents' reconnects
//! (full handshakes) kept the machine saturated.
//!
//! [`ReceiveThread::endpoint_runtime`] makes a [`quinn::Runtime`] that runs that one task — the
//! endpoint driver — on a dedicated thread with a runtime of its own, and everything else
//! (connection drivers, their timers) on the runtime that created the endpoint. The socket is
//! registered with the dedicated runtime, so the thread wakes as soon as a datagram arrives;
//! connection tasks on the main runtime send on it directly. Routing a datagram costs about a
//! microsecond, so the thread keeps the socket drained, and under overload the backlog waits in
//! the connections' queues (memory, bounded by the agents' flow-control windows) instead of
//! being dropped.
//! The fleet simulator's sockets, 18,000 connections over a few, had the same overflow at the
//! other end and use the same thread (one for all of them).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};
use tokio::sync::mpsc;

/// The receive thread's name (as `/proc/PID/task/*/comm` shows it).
pub const THREAD_NAME: &str = "bagui-quic-recv";

/// A thread with a runtime of its own for QUIC endpoint drivers:
/// [`ReceiveThread::endpoint_runtime`] makes the [`quinn::Runtime`] to create an endpoint with.
/// One thread can serve several endpoints (the simulator's sockets); it ends when the last of
/// their drivers does.
#[derive(Debug)]
pub struct ReceiveThread {
    /// Hands endpoint drivers to the thread.
    drivers: mpsc::UnboundedSender<Driver>,
    /// The dedicated runtime's handle: the sockets' IO is registered with it.
    dedicated: tokio::runtime::Handle,
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

impl ReceiveThread {
    /// Starts the thread, named `name` (the control plane's is [`THREAD_NAME`]). It ends when
    /// this value and every runtime made from it are gone and the endpoint drivers they
    /// received have finished (each endpoint dropped and its last connection gone).
    pub fn start(name: &str) -> io::Result<ReceiveThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dedicated = runtime.handle().clone();
        let (drivers, mut incoming) = mpsc::unbounded_channel::<Driver>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut running = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            driver = incoming.recv() => match driver {
                                Some(driver) => {
                                    running.spawn(driver);
                                }
                                None => break,
                            },
                            Some(_) = running.join_next(), if !running.is_empty() => {}
                        }
                    }
                    while running.join_next().await.is_some() {}
                });
            })?;
        Ok(ReceiveThread { drivers, dedicated })
    }

    /// A [`quinn::Runtime`] for one endpoint: the first future quinn spawns with it (the
    /// endpoint driver, spawned by [`quinn::Endpoint::new`]) runs on this thread; later ones
    /// (connection drivers) on the runtime current when this is called — it must be called
    /// inside a Tokio runtime.
    pub fn endpoint_runtime(&self) -> io::Result<Arc<EndpointRuntime>> {
        let main = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        Ok(Arc::new(EndpointRuntime {
            driver: Mutex::new(Some(self.drivers.clone())),
            dedicated: self.dedicated.clone(),
            main,
        }))
    }
}

/// The [`quinn::Runtime`] of one endpoint, from [`ReceiveThread::endpoint_runtime`].
pub struct EndpointRuntime {
    /// Hands the endpoint driver to the thread; taken by the first spawn.
    driver: Mutex<Option<mpsc::UnboundedSender<Driver>>>,
    dedicated: tokio::runtime::Handle,
    main: tokio::runtime::Handle,
}

impl fmt::Debug for EndpointRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointRuntime").finish_non_exhaustive()
    }
}

impl Runtime for EndpointRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        // Called by connection drivers, in their runtime's context.
        TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let sender = self
            .driver
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        let future = match sender {
            Some(sender) => match sender.send(future) {
                Ok(()) => return,
                // The thread is gone (it only ends after its drivers): run it here.
                Err(mpsc::error::SendError(future)) => future,
            },
            None => future,
        };
        self.main.spawn(future);
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // Registered with the dedicated runtime's reactor: readiness wakes the receive thread.
        let _entered = self.dedicated.enter();
        TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}
