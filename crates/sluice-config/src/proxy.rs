//! A validated proxy: URL without password, password by reference.

use std::fmt;

use url::Url;

use crate::secret::{SecretError, SecretRef};

/// One proxy: `http://`, `https://`, `socks5://` or `socks5h://`, optionally with a user name in
/// the URL and a password by reference. `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy URL; validation guarantees it has no password.
    pub url: Url,
    /// Where the password lives, if the proxy needs one.
    pub password: Option<SecretRef>,
}

impl ProxyConfig {
    /// Schemes a proxy URL may have.
    pub const SCHEMES: [&'static str; 4] = ["http", "https", "socks5", "socks5h"];

    /// The URL to hand to the HTTP client, with the password read now (re-read on every call).
    /// Treat the result as a secret: print it only through `sluice_client::redact::redact_url`.
    pub fn resolve_url(&self) -> Result<Url, SecretError> {
        let mut url = self.url.clone();
        if let Some(password) = &self.password {
            let secret = password.resolve()?;
            // A URL that has a host (validation checked) always accepts a password.
            let _ = url.set_password(Some(secret.expose()));
        }
        Ok(url)
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &self.url.as_str())
            .field("password", &self.password)
            .finish()
    }
}
