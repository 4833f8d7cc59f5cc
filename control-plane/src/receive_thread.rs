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
//! [`ReceiveThread`] is a [`quinn::Runtime`] that runs that one task — the endpoint driver —
//! on a dedicated thread with a runtime of its own, and everything else (connection drivers,
//! their timers) on the runtime that created the endpoint. The socket is registered with the
//! dedicated runtime, so the thread wakes as soon as a datagram arrives; connection tasks on
//! the main runtime send on it directly. Routing a datagram costs about a microsecond, so the
//! thread keeps the socket drained, and under overload the backlog waits in the connections'
//! queues (memory, bounded by the agents' flow-control windows) instead of being dropped.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};
use tokio::sync::oneshot;

/// The receive thread's name (as `/proc/PID/task/*/comm` shows it).
pub const THREAD_NAME: &str = "bagui-quic-recv";

/// A [`quinn::Runtime`]: the first future quinn spawns (the endpoint driver, spawned by
/// [`quinn::Endpoint::new`]) runs on a thread of its own; later ones (connection drivers) on
/// the runtime current when this was made.
pub struct ReceiveThread {
    /// Hands the endpoint driver to the thread; taken by the first spawn.
    driver: Mutex<Option<oneshot::Sender<Driver>>>,
    /// The dedicated runtime's handle: the socket's IO is registered with it.
    dedicated: tokio::runtime::Handle,
    main: tokio::runtime::Handle,
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for ReceiveThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveThread").finish_non_exhaustive()
    }
}

impl ReceiveThread {
    /// Starts the thread ([`THREAD_NAME`]). Must be called inside a Tokio runtime: the one the
    /// connections will run on. The thread ends when the endpoint driver does (the endpoint
    /// dropped and its last connection gone), or at once if no endpoint is ever made.
    pub fn start() -> io::Result<Arc<ReceiveThread>> {
        let main = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dedicated = runtime.handle().clone();
        let (sender, receiver) = oneshot::channel::<Driver>();
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    if let Ok(driver) = receiver.await {
                        driver.await;
                    }
                });
            })?;
        Ok(Arc::new(ReceiveThread {
            driver: Mutex::new(Some(sender)),
            dedicated,
            main,
        }))
    }
}

impl Runtime for ReceiveThread {
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
                // The thread is gone (it only ends after its driver): run it here.
                Err(future) => future,
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
