//! Making URLs safe to show: credentials and query strings can carry secrets.

use url::Url;

/// Returns `url` with any password replaced by `***` and any query string replaced by `?***`.
///
/// The user name is kept (it identifies which credential was used without revealing it); the
/// query is hidden whole because tokens are often passed there.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // `set_password` only fails for URLs that cannot have credentials, which then have none.
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        shown.set_query(Some("***"));
    }
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_queries_are_hidden_but_hosts_are_kept() {
        let url =
            Url::parse("socks5://alice:hunter2@127.0.0.1:1080/x?token=abc#f").expect("valid url");
        let shown = redact_url(&url);
        assert_eq!(shown, "socks5://alice:***@127.0.0.1:1080/x?***");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("abc"));
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        let url = Url::parse("http://127.0.0.1:8080/v1/stream").expect("valid url");
        assert_eq!(redact_url(&url), "http://127.0.0.1:8080/v1/stream");
    }
}
