//! Validation of what a request is made of: proxies, TLS roots, headers, URLs (for targets and
//! base-state fetches alike), and a stream request's method and body.
//!
//! What it must NOT do: read a secret's value (only check that it can be read), or accept a URL
//! with a scheme or host it cannot use.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Checker<'_> {
    pub(super) fn proxy(&mut self, field: &str, raw: &RawProxy) -> Option<ProxyConfig> {
        let Some(url) = &raw.url else {
            self.report(
                &format!("{field}.url"),
                ProblemKind::Missing,
                "missing proxy url".to_owned(),
            );
            return None;
        };
        let url_field = format!("{field}.url");
        let url = match Url::parse(url) {
            Ok(url) => url,
            Err(err) => {
                self.report(&url_field, ProblemKind::BadUrl, format!("bad url: {err}"));
                return None;
            }
        };
        let mut ok = true;
        if !ProxyConfig::SCHEMES.contains(&url.scheme()) {
            self.report(
                &url_field,
                ProblemKind::BadUrl,
                format!(
                    "unsupported proxy scheme {:?}: use http, https, socks5 or socks5h",
                    url.scheme()
                ),
            );
            ok = false;
        }
        if !url.has_host() {
            self.report(
                &url_field,
                ProblemKind::BadUrl,
                "proxy url has no host".to_owned(),
            );
            ok = false;
        }
        if url.password().is_some() {
            self.report(
                &url_field,
                ProblemKind::InlineSecret,
                "proxy url contains a password: remove it and set password: {env: VAR} or {file: /path}"
                    .to_owned(),
            );
            ok = false;
        }
        let password = match &raw.password {
            Some(password) => {
                let secret = self.secret(&format!("{field}.password"), password);
                ok &= secret.is_some();
                secret
            }
            None => None,
        };
        ok.then_some(ProxyConfig { url, password })
    }

    /// A target's `tls` section: the CA bundle read now (relative to this file) and checked to be
    /// PEM with at least one certificate. The certificates are not parsed: that is the TLS stack's
    /// job when the worker builds its client.
    pub(super) fn tls(&mut self, raw: &RawTls) -> Vec<Vec<u8>> {
        let Some(ca_file) = &raw.ca_file else {
            return Vec::new();
        };
        let field = "tls.ca_file";
        if ca_file.is_empty() {
            self.report(
                field,
                ProblemKind::Missing,
                "empty ca file path: name a pem bundle, relative to this file".to_owned(),
            );
            return Vec::new();
        }
        let path = self.dir().join(ca_file);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.report(
                    field,
                    ProblemKind::BadCaFile,
                    format!(
                        "cannot read ca file {}: {}",
                        path.display(),
                        crate::load::lowercase_first(&err.to_string())
                    ),
                );
                return Vec::new();
            }
        };
        if !holds_pem_certificate(&bytes) {
            self.report(
                field,
                ProblemKind::BadCaFile,
                format!(
                    "ca file {} is not a pem certificate bundle: no {PEM_BEGIN_CERTIFICATE} block found",
                    path.display()
                ),
            );
            return Vec::new();
        }
        vec![bytes]
    }

    /// A target's client certificate (`tls.client_cert`, relative to this file, checked to hold a
    /// PEM certificate) and key (`tls.client_key`, a secret checked to be readable): both or
    /// neither.
    pub(super) fn client_identity(&mut self, raw: &RawTls) -> Option<ClientIdentity> {
        let (cert, key) = match (&raw.client_cert, &raw.client_key) {
            (None, None) => return None,
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) | (None, Some(_)) => {
                self.report(
                    "tls",
                    ProblemKind::Missing,
                    "tls.client_cert and tls.client_key go together: set both or neither"
                        .to_owned(),
                );
                return None;
            }
        };
        let field = "tls.client_cert";
        let path = self.dir().join(cert);
        match std::fs::read(&path) {
            Ok(bytes) if holds_pem_certificate(&bytes) => {}
            Ok(_) => {
                self.report(
                    field,
                    ProblemKind::BadCaFile,
                    format!(
                        "client certificate {} is not pem: no {PEM_BEGIN_CERTIFICATE} block found",
                        path.display()
                    ),
                );
                return None;
            }
            Err(err) => {
                self.report(
                    field,
                    ProblemKind::BadCaFile,
                    format!(
                        "cannot read client certificate {}: {}",
                        path.display(),
                        crate::load::lowercase_first(&err.to_string())
                    ),
                );
                return None;
            }
        }
        let key = self.secret("tls.client_key", key)?;
        Some(ClientIdentity {
            cert: SecretRef::File(path),
            key,
        })
    }

    /// Request headers: `{value}` for plain text (never for credential headers), `{env}` /
    /// `{file}` for secrets; each problem on `<prefix>.<name>`.
    pub(super) fn headers(
        &mut self,
        prefix: &str,
        raw: &BTreeMap<String, RawValueRef>,
    ) -> Vec<(HeaderName, HeaderSource)> {
        let mut headers = Vec::new();
        for (name, value) in raw {
            let field = format!("{prefix}.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                self.report(
                    &field,
                    ProblemKind::Invalid,
                    format!("bad header name {name:?}"),
                );
                continue;
            };
            let sensitive = header == http::header::AUTHORIZATION
                || header == http::header::COOKIE
                || header == http::header::PROXY_AUTHORIZATION;
            let source = match (&value.value, &value.env, &value.file) {
                (Some(_), None, None) if sensitive => {
                    self.report(
                        &field,
                        ProblemKind::InlineSecret,
                        format!("header {name:?} carries credentials: use {{env: VAR}} or {{file: /path}} (or auth.bearer / auth.cookie)"),
                    );
                    continue;
                }
                (Some(plain), None, None) => {
                    if HeaderValue::from_str(plain).is_err() {
                        self.report(&field, ProblemKind::Invalid, "bad header value".to_owned());
                        continue;
                    }
                    HeaderSource::Plain(plain.clone())
                }
                (None, _, _) => match self.secret(&field, value) {
                    Some(secret) => HeaderSource::Secret(secret),
                    None => continue,
                },
                _ => {
                    self.report(
                        &field,
                        ProblemKind::Malformed,
                        "write exactly one of {value: \"...\"}, {env: VAR} or {file: /path}"
                            .to_owned(),
                    );
                    continue;
                }
            };
            headers.push((header, source));
        }
        headers
    }

    /// An OAuth2 client-credentials grant: a token URL, a client id and a secret client secret.
    pub(super) fn oauth2(&mut self, field: &str, raw: &RawOAuth2) -> Option<OAuth2Config> {
        let token_url = match &raw.token_url {
            Some(url) => self.http_url(&format!("{field}.token_url"), url),
            None => {
                self.report(
                    &format!("{field}.token_url"),
                    ProblemKind::Missing,
                    "missing oauth2 token url".to_owned(),
                );
                None
            }
        };
        let client_id = match raw.client_id.as_deref() {
            Some(id) if !id.is_empty() => Some(id.to_owned()),
            _ => {
                self.report(
                    &format!("{field}.client_id"),
                    ProblemKind::Missing,
                    "missing oauth2 client id".to_owned(),
                );
                None
            }
        };
        let client_secret = match &raw.client_secret {
            Some(secret) => self.secret(&format!("{field}.client_secret"), secret),
            None => {
                self.report(
                    &format!("{field}.client_secret"),
                    ProblemKind::Missing,
                    "missing oauth2 client secret: {env: VAR} or {file: /path}".to_owned(),
                );
                None
            }
        };
        Some(OAuth2Config {
            token_url: token_url?,
            client_id: client_id?,
            client_secret: client_secret?,
            scopes: raw.scopes.clone(),
        })
    }

    /// A request method (`GET` when absent): an HTTP token, as written (methods are
    /// case-sensitive).
    pub(super) fn method(&mut self, field: &str, raw: Option<&str>) -> http::Method {
        let Some(raw) = raw else {
            return http::Method::GET;
        };
        match http::Method::from_bytes(raw.as_bytes()) {
            Ok(method) => method,
            Err(_) => {
                self.report(
                    field,
                    ProblemKind::Invalid,
                    format!("bad method {raw:?}: write an HTTP method such as GET, POST or REPORT"),
                );
                http::Method::GET
            }
        }
    }

    /// A request body: exactly one of `value`, `json`, `env` or `file`, with an optional
    /// `content_type`; refused with `GET` and `HEAD`.
    pub(super) fn body(
        &mut self,
        field: &str,
        raw: &RawBody,
        method: &http::Method,
    ) -> Option<RequestBody> {
        if method == http::Method::GET || method == http::Method::HEAD {
            self.report(
                field,
                ProblemKind::Invalid,
                format!("a {method} request carries no body: set method (e.g. POST or REPORT)"),
            );
            return None;
        }
        let (source, default_type) = match (&raw.value, &raw.json, &raw.env, &raw.file) {
            (Some(text), None, None, None) => (BodySource::Plain(text.clone()), "text/plain"),
            (None, Some(json), None, None) => {
                (BodySource::Plain(json.to_string()), "application/json")
            }
            (None, None, Some(_), None) | (None, None, None, Some(_)) => {
                let reference = RawValueRef {
                    env: raw.env.clone(),
                    file: raw.file.clone(),
                    value: None,
                };
                (
                    BodySource::Secret(self.secret(field, &reference)?),
                    "text/plain",
                )
            }
            _ => {
                self.report(
                    field,
                    ProblemKind::Malformed,
                    "write exactly one of value, json, env or file".to_owned(),
                );
                return None;
            }
        };
        let content_type = raw.content_type.as_deref().unwrap_or(default_type);
        let Ok(content_type) = HeaderValue::from_str(content_type) else {
            self.report(
                &format!("{field}.content_type"),
                ProblemKind::Invalid,
                format!("bad content type {content_type:?}"),
            );
            return None;
        };
        Some(RequestBody {
            source,
            content_type,
        })
    }

    /// An `http` or `https` URL without a password.
    pub(super) fn http_url(&mut self, field: &str, raw: &str) -> Option<Url> {
        let url = match Url::parse(raw) {
            Ok(url) => url,
            Err(err) => {
                self.report(
                    field,
                    ProblemKind::BadUrl,
                    format!("bad url {raw:?}: {err}"),
                );
                return None;
            }
        };
        if url.scheme() != "http" && url.scheme() != "https" {
            self.report(
                field,
                ProblemKind::BadUrl,
                format!("unsupported scheme {:?}: use http or https", url.scheme()),
            );
            return None;
        }
        if url.password().is_some() {
            self.report(
                field,
                ProblemKind::InlineSecret,
                "url contains a password: use auth or headers with {env: VAR} or {file: /path}"
                    .to_owned(),
            );
            return None;
        }
        Some(url)
    }
}
