//! The proxies really carry traffic: hand-made CONNECT and SOCKS5 handshakes through each one
//! to a tiny loopback HTTP server.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use base64::Engine as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::port::{accepts_connections, loopback};

const BODY: &str = "hello through the proxy";

/// Serves one `200 OK` with [`BODY`] to every connection; returns its address.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut socket).await.is_empty() {
                    return;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// Reads up to and including the blank line that ends an HTTP head.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends a GET over an established tunnel and returns the whole response.
async fn get_through(mut tunnel: TcpStream, target: SocketAddr) -> String {
    let request = format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    tunnel.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tunnel.read_to_string(&mut response).await.unwrap();
    response
}

/// Opens a CONNECT tunnel through an HTTP proxy; returns the proxy's response head and the socket.
async fn http_connect(
    proxy_port: u16,
    target: SocketAddr,
    auth: Option<&ProxyAuth>,
) -> (String, TcpStream) {
    let mut socket = TcpStream::connect(loopback(proxy_port)).await.unwrap();
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = auth {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.user, auth.password).as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut socket).await;
    (head, socket)
}

/// The SOCKS5 handshake (RFC 1928, with RFC 1929 username/password when `auth` is given).
/// Returns the reply code of the last step: 0 is success.
async fn socks5_connect(
    proxy_port: u16,
    target: SocketAddr,
    auth: Option<&ProxyAuth>,
) -> (u8, TcpStream) {
    let mut socket = TcpStream::connect(loopback(proxy_port)).await.unwrap();
    let method = if auth.is_some() { 0x02 } else { 0x00 };
    socket.write_all(&[0x05, 0x01, method]).await.unwrap();
    let mut choice = [0u8; 2];
    socket.read_exact(&mut choice).await.unwrap();
    if choice != [0x05, method] {
        return (0xff, socket);
    }
    if let Some(auth) = auth {
        let mut msg = vec![0x01, u8::try_from(auth.user.len()).unwrap()];
        msg.extend_from_slice(auth.user.as_bytes());
        msg.push(u8::try_from(auth.password.len()).unwrap());
        msg.extend_from_slice(auth.password.as_bytes());
        socket.write_all(&msg).await.unwrap();
        let mut status = [0u8; 2];
        if socket.read_exact(&mut status).await.is_err() {
            return (0xff, socket);
        }
        if status[1] != 0 {
            return (status[1], socket);
        }
    }
    let SocketAddr::V4(v4) = target else {
        panic!("loopback target is IPv4")
    };
    let mut msg = vec![0x05, 0x01, 0x00, 0x01];
    msg.extend_from_slice(&v4.ip().octets());
    msg.extend_from_slice(&v4.port().to_be_bytes());
    socket.write_all(&msg).await.unwrap();
    let mut reply = [0u8; 10];
    socket.read_exact(&mut reply).await.unwrap();
    (reply[1], socket)
}

#[test]
fn urls_percent_encode_credentials() {
    let auth = ProxyAuth::new("u@x", "p:w/d");
    assert_eq!(auth.userinfo(), "u%40x:p%3Aw%2Fd@");
}

#[test]
fn debug_of_credentials_hides_the_password() {
    let shown = format!("{:?}", ProxyAuth::new("user", "s3cret"));
    assert!(shown.contains("user"));
    assert!(!shown.contains("s3cret"));
}

#[tokio::test]
async fn tinyproxy_tunnels_connect_to_any_port_and_logs_it() {
    let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else {
        return;
    };
    let target = http_server().await;
    assert_eq!(proxy.url(), format!("http://127.0.0.1:{}", proxy.port()));

    let (head, tunnel) = http_connect(proxy.port(), target, None).await;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let response = get_through(tunnel, target).await;
    assert!(response.ends_with(BODY), "{response}");
    assert!(
        proxy.log().contains(&format!("CONNECT {target}")),
        "log: {}",
        proxy.log()
    );
}

#[tokio::test]
async fn tinyproxy_with_basic_auth_rejects_anonymous_and_accepts_credentials() {
    let auth = ProxyAuth::new("sluice", "tunnel-pass");
    let opts = TinyproxyOptions {
        auth: Some(auth.clone()),
        connect_port: None,
    };
    let Some(proxy) = Tinyproxy::start_or_skip(opts) else {
        return;
    };
    let target = http_server().await;
    assert_eq!(
        proxy.url(),
        format!("http://sluice:tunnel-pass@127.0.0.1:{}", proxy.port())
    );

    let (head, _) = http_connect(proxy.port(), target, None).await;
    assert!(head.contains(" 407 "), "{head}");

    let (head, tunnel) = http_connect(proxy.port(), target, Some(&auth)).await;
    assert!(head.contains(" 200 "), "{head}");
    assert!(get_through(tunnel, target).await.ends_with(BODY));
}

#[tokio::test]
async fn tinyproxy_with_a_connect_port_refuses_other_ports() {
    let target = http_server().await;
    let opts = TinyproxyOptions {
        auth: None,
        connect_port: Some(target.port()),
    };
    let Some(proxy) = Tinyproxy::start_or_skip(opts) else {
        return;
    };
    let other = http_server().await;

    let (head, _) = http_connect(proxy.port(), other, None).await;
    assert!(head.contains(" 403 "), "{head}");
    let (head, tunnel) = http_connect(proxy.port(), target, None).await;
    assert!(head.contains(" 200 "), "{head}");
    assert!(get_through(tunnel, target).await.ends_with(BODY));
}

#[tokio::test]
async fn microsocks_with_auth_tunnels_after_the_socks5_handshake() {
    let auth = ProxyAuth::new("sluice", "socks-pass");
    let opts = MicrosocksOptions {
        auth: Some(auth.clone()),
    };
    let Some(proxy) = Microsocks::start_or_skip(opts) else {
        return;
    };
    let target = http_server().await;
    assert_eq!(
        proxy.url(),
        format!("socks5h://sluice:socks-pass@127.0.0.1:{}", proxy.port())
    );
    assert_eq!(
        proxy.url_socks5(),
        format!("socks5://sluice:socks-pass@127.0.0.1:{}", proxy.port())
    );

    let (code, tunnel) = socks5_connect(proxy.port(), target, Some(&auth)).await;
    assert_eq!(code, 0, "socks5 reply code");
    assert!(get_through(tunnel, target).await.ends_with(BODY));
    assert!(
        proxy.log().contains(&format!("connected to {target}")),
        "log: {}",
        proxy.log()
    );
}

#[tokio::test]
async fn microsocks_with_auth_rejects_a_wrong_password() {
    let opts = MicrosocksOptions {
        auth: Some(ProxyAuth::new("sluice", "socks-pass")),
    };
    let Some(proxy) = Microsocks::start_or_skip(opts) else {
        return;
    };
    let target = http_server().await;
    let wrong = ProxyAuth::new("sluice", "not-the-pass");
    let (code, _) = socks5_connect(proxy.port(), target, Some(&wrong)).await;
    assert_ne!(code, 0);
}

#[tokio::test]
async fn microsocks_without_auth_tunnels_anonymously() {
    let Some(proxy) = Microsocks::start_or_skip(MicrosocksOptions::default()) else {
        return;
    };
    let target = http_server().await;
    assert_eq!(proxy.url(), format!("socks5h://127.0.0.1:{}", proxy.port()));
    let (code, tunnel) = socks5_connect(proxy.port(), target, None).await;
    assert_eq!(code, 0, "socks5 reply code");
    assert!(get_through(tunnel, target).await.ends_with(BODY));
}

#[test]
fn dropping_a_proxy_stops_it_and_removes_its_dir() {
    let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else {
        return;
    };
    let port = proxy.port();
    let dir = proxy.daemon.dir().to_path_buf();
    assert!(accepts_connections(loopback(port)));
    drop(proxy);
    assert!(!accepts_connections(loopback(port)));
    assert!(!dir.exists());
}

#[test]
fn a_missing_program_is_reported_as_not_installed() {
    let err = require("sluice-no-such-proxy", "sluice-no-such-package").unwrap_err();
    assert_eq!(err.kind(), "not_installed");
    assert!(
        err.to_string()
            .contains("apt-get install sluice-no-such-package")
    );
}
