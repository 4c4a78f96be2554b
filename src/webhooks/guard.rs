//! Where webhooks may go. An admin's endpoint URL must not turn the delivery worker into a way
//! into the ledger's own network: loopback, private, link-local (cloud metadata at
//! 169.254.169.254 among them), shared, multicast and reserved addresses are refused, as an IP
//! literal in the URL (in any of its spellings: the URL parser turns `0x7f000001` into
//! 127.0.0.1) and as what a name resolves to at delivery time (so a name that later points
//! inside is caught too). Redirects are not followed, and a URL may not carry credentials.
//! `LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true` lifts the address rule (for a receiver on the
//! same host or network, and for tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Whether a webhook may not be sent to `ip`.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // An IPv4 address mapped or translated into IPv6 is judged as itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local (fc00::/7)
        || (segments[0] & 0xffc0) == 0xfe80 // link-local (fe80::/10)
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (fec0::/10, deprecated)
        || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
        || segments[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
}

/// Why `url` cannot be a webhook endpoint, if it cannot: a sentence naming the problem.
pub fn refuse(url: &Url, allow_private: bool) -> Option<&'static str> {
    if !url.username().is_empty() || url.password().is_some() {
        return Some(
            "must not carry credentials; authenticate the receiver by the webhook's signature",
        );
    }
    if allow_private {
        return None;
    }
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(name) => {
            if name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost") {
                return Some(PRIVATE);
            }
            return None;
        }
    };
    forbidden(ip).then_some(PRIVATE)
}

const PRIVATE: &str = "must not point at a loopback, private, link-local or reserved address (set LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow them)";

/// A resolver that leaves out forbidden addresses, failing when none is left.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| !forbidden(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    format!("{host} resolves only to addresses webhooks may not reach").into(),
                );
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> bool {
        refuse(&Url::parse(url).unwrap(), false).is_some()
    }

    #[test]
    fn inside_addresses_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1:5432/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]:22/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.8/",
            "http://172.16.3.4/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://user:pw@example.com/",
        ] {
            assert!(refused(url), "{url} should be refused");
        }
        for url in [
            "https://example.com/hooks",
            "http://93.184.216.34/",
            "http://[2606:4700::1111]/",
        ] {
            assert!(!refused(url), "{url} should be allowed");
        }
    }

    #[test]
    fn the_switch_allows_inside_addresses_but_never_credentials() {
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(refuse(&url("http://127.0.0.1:9/"), true).is_none());
        assert!(refuse(&url("http://u:p@127.0.0.1:9/"), true).is_some());
    }
}
