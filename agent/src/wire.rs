//! Reading and writing framed messages on QUIC streams, and connecting.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bagui_protocol::{ErrorCode, Frame, FrameDecoder, FrameError};
use bytes::BytesMut;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(#[from] quinn::ReadError),
}

/// Reads the next frame; `Ok(None)` when the peer finished the stream cleanly.
///
/// Cancel-safe: the only await point is `read_chunk`, which either hands over a chunk or
/// leaves it in the stream.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(64 * 1024, true).await? {
            Some(chunk) => decoder.extend(&chunk.bytes),
            None => {
                decoder.finish()?;
                return Ok(None);
            }
        }
    }
}

/// Writes already-encoded frames.
pub async fn write_frames(
    send: &mut quinn::SendStream,
    frames: &BytesMut,
) -> Result<(), quinn::WriteError> {
    send.write_all(frames).await
}

/// The typed reason a connection was closed by the control plane, if it was.
pub fn close_code(error: &quinn::ConnectionError) -> Option<(ErrorCode, String)> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some((
            ErrorCode::from_code(close.error_code.into_inner()),
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        _ => None,
    }
}

/// Resolves `HOST:PORT` to an address and the TLS server name.
pub async fn resolve(server: &str) -> Result<(SocketAddr, String)> {
    let (host, _) = server
        .rsplit_once(':')
        .with_context(|| format!("control plane address {server:?} is not HOST:PORT"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let address = tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("resolving {server}"))?
        .next()
        .with_context(|| format!("{server} resolved to no address"))?;
    Ok((address, host))
}

/// A UDP socket bound to `address` with large kernel buffers: mass connects and disconnects
/// of thousands of connections overflow the 208 KiB default. The kernel caps the size at
/// `net.core.{r,w}mem_max`; a smaller buffer still works.
pub fn udp_socket(address: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .context("creating a UDP socket")?;
    if address.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket
        .bind(&address.into())
        .with_context(|| format!("binding udp://{address}"))?;
    Ok(socket.into())
}

/// A client endpoint suitable for reaching `address`.
pub fn client_endpoint(address: SocketAddr) -> Result<quinn::Endpoint> {
    let bind: SocketAddr = if address.is_ipv6() {
        "[::]:0".parse().expect("valid address")
    } else {
        "0.0.0.0:0".parse().expect("valid address")
    };
    quinn::Endpoint::client(bind).with_context(|| format!("binding a UDP socket on {bind}"))
}
