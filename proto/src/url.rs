//! The one reader of a control plane's URL (`--server`, `--control-plane`,
//! `--otlp-endpoint`): which transport it asks for.

/// A gRPC endpoint's URL, read: `http://` is plaintext, `https://` is TLS (the scheme in
/// any case), and a bare `host:port` is plaintext, as people type it. Any other scheme
/// is refused, so a mistyped `https` (`htps://`) never sends a token in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcUrl {
    /// The URL with its scheme written in lowercase (added when it had none).
    pub url: String,
    pub tls: bool,
}

impl GrpcUrl {
    /// Reads `url`; the error says what is wrong with it, for the flag's message.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self::checked(format!("http://{url}"), false);
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => {
                return Err(format!(
                    "{url:?}: scheme {scheme:?} is neither http nor https"
                ));
            }
        };
        let scheme = if tls { "https" } else { "http" };
        Self::checked(format!("{scheme}://{rest}"), tls)
    }

    /// `url` if it names a host (and, if any, a port) as an endpoint's URL must: a
    /// list's bad entry is refused at once, not when fail-over first needs it.
    fn checked(url: String, tls: bool) -> Result<Self, String> {
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?}: not a URL ({e})"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{url:?}: no host"));
        }
        // The URL parser takes any text after the host's `:`; a port is a number.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let after_host = authority
            .rsplit_once(']')
            .map_or(authority, |(_, rest)| rest);
        if after_host.contains(':') && uri.port_u16().is_none() {
            return Err(format!("{url:?}: the port is not a number"));
        }
        Ok(Self { url, tls })
    }
}

/// The control planes of a sidecar's `--control-plane` (comma-separated, for fail-over),
/// each read with [`GrpcUrl::parse`]; at least one. Also how injection checks the URLs
/// it writes into every pod (a typo there crash-loops them all).
pub fn control_plane_urls(list: &str) -> Result<Vec<GrpcUrl>, String> {
    let urls = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(GrpcUrl::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(format!("{list:?}: no URL given"));
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::{GrpcUrl, control_plane_urls};

    #[test]
    fn a_control_plane_list_needs_one_url_and_no_bad_one() {
        let read = |l: &str| control_plane_urls(l).map(|v| v.len());
        assert_eq!(read("http://a:1, https://b:2"), Ok(2));
        assert_eq!(read("a:1,"), Ok(1));
        assert_eq!(read(" , "), Err("\" , \": no URL given".into()));
        assert!(
            read("http://a:1,htps://b:2")
                .unwrap_err()
                .contains("\"htps\"")
        );
        // A host and port that are no endpoint's, whichever place in the list.
        for bad in [
            "http://a:1,http://",
            "http://a:1,http://[::1",
            "a b:1",
            "http://a:port",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_http_and_https_are_read_and_the_scheme_says_the_transport() {
        let read = |u: &str| GrpcUrl::parse(u).map(|g| (g.url, g.tls));
        assert_eq!(read("http://a:1"), Ok(("http://a:1".into(), false)));
        assert_eq!(read("https://a:1"), Ok(("https://a:1".into(), true)));
        assert_eq!(read("HTTPS://a:1"), Ok(("https://a:1".into(), true)));
        assert_eq!(read("Http://a:1"), Ok(("http://a:1".into(), false)));
        assert_eq!(read("a:1"), Ok(("http://a:1".into(), false)));
        for typo in [
            "htps://a:1",
            "ftp://a:1",
            "https:/a:1://",
            "grpcs://a:1",
            "://a:1",
        ] {
            let e = read(typo).unwrap_err();
            assert!(e.contains("neither http nor https"), "{typo}: {e}");
        }
    }
}
