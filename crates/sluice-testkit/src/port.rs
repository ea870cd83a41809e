//! Free loopback ports and waiting until a port accepts connections.
//!
//! What it must NOT do: bind anything but 127.0.0.1.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Asks the kernel for a free port on 127.0.0.1.
///
/// The port is released before it is returned, so another process may take it first; callers
/// that spawn a server on it retry with a new port when the server fails to start.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The loopback socket address for `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Tries once to connect to `addr`; a successful connect means the server is listening.
pub(crate) fn accepts_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
