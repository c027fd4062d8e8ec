//! Which network addresses URL ingest may reach: a deny list of every address that is not the public
//! internet (loopback, private, link-local, cloud metadata, multicast, ...), and the `fetch.allow`
//! CIDRs that override it. The fetcher checks the resolved address of every hop here before it
//! connects (ragd-server's `fetch.rs`); this module is pure and knows nothing of HTTP.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block such as `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this block. An IPv4 block never holds an IPv6 address nor the other way
    /// round; callers pass addresses through `canonical` first, so `::ffff:10.0.0.1` is `10.0.0.1`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => masked(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(u128::from(ip), 128, self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

/// `bits` with everything past the first `prefix` of `width` bits cleared.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u128::MAX << (width - prefix);
    bits & keep & (u128::MAX >> (128 - u32::from(width)))
}

impl FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/n`, `x:y::z/n` or a bare address. Bits set past the prefix are refused
    /// (`10.0.0.1/8` is almost always a typo for one address or for `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not a CIDR like 10.0.0.0/8 or fd00::/8"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= width).ok_or_else(|| format!("`{s}`: the prefix length must be 0-{width}"))?,
        };
        let cidr = Cidr { network, prefix };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if masked(bits, width, prefix) != bits {
            return Err(format!("`{s}` has address bits set past its /{prefix} prefix"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The address as it was resolved (before its IPv4 form was taken out of a mapped IPv6 one).
    pub ip: IpAddr,
    /// What kind of address it is, in words: `loopback`, `private`, `cloud metadata`, ...
    pub reason: &'static str,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is a {} address", self.ip, self.reason)
    }
}

/// The deny list and the allow-list that overrides it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Cidr>,
}

impl EgressPolicy {
    /// From `fetch.allow`; every entry that is not a CIDR is reported.
    pub fn new(allow: &[String]) -> Result<EgressPolicy, Vec<String>> {
        let mut cidrs = Vec::new();
        let mut problems = Vec::new();
        for a in allow {
            match a.parse::<Cidr>() {
                Ok(c) => cidrs.push(c),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() { Ok(EgressPolicy { allow: cidrs }) } else { Err(problems) }
    }

    /// `Ok` when a connection to `ip` may be made: the address is public, or an allowed block holds it
    /// (in the form it was resolved to or in its IPv4 form).
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let Some(reason) = denied_reason(ip) else { return Ok(()) };
        let canonical = canonical(ip);
        if self.allow.iter().any(|c| c.contains(ip) || c.contains(canonical)) {
            return Ok(());
        }
        Err(Denied { ip, reason })
    }
}

/// An IPv4 address carried in an IPv6 one that reaches that IPv4 address: IPv4-mapped
/// (`::ffff:a.b.c.d`, which the kernel connects to as IPv4). Others are left as they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why `ip` is not a public internet address, or `None` when it is one.
pub fn denied_reason(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    // The most specific reason first: 169.254.169.254 is link-local too, but saying "metadata"
    // tells an operator what was at stake.
    Some(match () {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        _ if ip.is_broadcast() => "broadcast",
        _ if a == 0 => "unspecified (this network)",
        _ if a == 127 => "loopback",
        _ if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) => "private",
        _ if a == 100 && (64..128).contains(&b) => "shared (carrier-grade NAT)",
        _ if a == 169 && b == 254 => "link-local",
        _ if a == 192 && b == 0 && c == 0 => "reserved (IETF protocol assignment)",
        _ if a == 198 && (b == 18 || b == 19) => "reserved (benchmarking)",
        _ if (224..240).contains(&a) => "multicast",
        _ if a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Prefixes that carry an IPv4 address a translator or relay would reach are refused when that
    // address is not public (NAT64 `64:ff9b::/96`, 6to4 `2002::/16`); the local-use NAT64 prefix
    // `64:ff9b:1::/48` is refused whole.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match () {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) => "cloud metadata",
        // `::a.b.c.d`, the deprecated IPv4-compatible form (and the rest of `::/96`).
        _ if seg[..6] == [0; 6] => "reserved (IPv4-compatible)",
        _ if seg[0] & 0xffc0 == 0xfe80 => "link-local",
        _ if seg[0] & 0xffc0 == 0xfec0 => "site-local",
        _ if seg[0] & 0xfe00 == 0xfc00 => "private (unique local)",
        _ if seg[0] & 0xff00 == 0xff00 => "multicast",
        _ if seg[..4] == [0x0100, 0, 0, 0] => "reserved (discard-only)",
        _ if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && v4_reason(embedded(seg[6], seg[7])).is_some() => "NAT64 form of a non-public",
        _ if seg[..3] == [0x64, 0xff9b, 1] => "reserved (local-use NAT64)",
        _ if seg[0] == 0x2002 && v4_reason(embedded(seg[1], seg[2])).is_some() => "6to4 form of a non-public",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reason(s: &str) -> Option<&'static str> {
        denied_reason(ip(s))
    }

    #[test]
    fn every_denied_range_is_refused_with_its_reason() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("127.0.0.2", "loopback"),
            ("0.0.0.0", "unspecified (this network)"),
            ("0.1.2.3", "unspecified (this network)"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("100.100.100.200", "shared (carrier-grade NAT)"),
            ("169.254.0.1", "link-local"),
            ("169.254.169.254", "cloud metadata"),
            ("192.0.0.1", "reserved (IETF protocol assignment)"),
            ("198.18.0.1", "reserved (benchmarking)"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("fec0::1", "site-local"),
            ("fc00::1", "private (unique local)"),
            ("fdff:ffff::1", "private (unique local)"),
            ("fd00:ec2::254", "cloud metadata"),
            ("ff02::1", "multicast"),
            ("::7f00:1", "reserved (IPv4-compatible)"),
            ("100::1", "reserved (discard-only)"),
            ("64:ff9b::7f00:1", "NAT64 form of a non-public"),
            ("64:ff9b::a9fe:a9fe", "NAT64 form of a non-public"),
            ("64:ff9b:1::1", "reserved (local-use NAT64)"),
            ("2002:7f00:1::1", "6to4 form of a non-public"),
            ("2002:c0a8:101::1", "6to4 form of a non-public"),
        ];
        for (addr, want) in cases {
            assert_eq!(reason(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_forms_are_judged_as_their_ipv4_address() {
        for (mapped, want) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:172.16.0.1", "private"),
            ("::ffff:192.168.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:169.254.1.1", "link-local"),
            ("::ffff:100.64.0.1", "shared (carrier-grade NAT)"),
            ("::ffff:0.0.0.0", "unspecified (this network)"),
            ("::ffff:224.0.0.1", "multicast"),
            ("::ffff:255.255.255.255", "broadcast"),
            ("::ffff:7f00:1", "loopback"),
        ] {
            assert_eq!(reason(mapped), Some(want), "{mapped}");
        }
        assert_eq!(reason("::ffff:93.184.216.34"), None, "a mapped public address is public");
    }

    #[test]
    fn public_addresses_pass_and_range_edges_are_exact() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fe7f:ffff::1",
            "fbff:ffff::1",
        ] {
            assert_eq!(reason(public), None, "{public}");
            assert!(EgressPolicy::default().check(ip(public)).is_ok(), "{public}");
        }
    }

    #[test]
    fn the_allow_list_overrides_the_deny_list_for_its_blocks_only() {
        let p = EgressPolicy::new(&["127.0.0.1/32".into(), "10.1.0.0/16".into(), "fd00::/8".into()]).unwrap();
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok(), "the mapped form of an allowed address is allowed");
        assert_eq!(p.check(ip("127.0.0.2")), Err(Denied { ip: ip("127.0.0.2"), reason: "loopback" }));
        assert!(p.check(ip("::1")).is_err(), "allowing 127.0.0.1 does not allow ::1");
        assert!(p.check(ip("10.1.200.3")).is_ok());
        assert!(p.check(ip("10.2.0.1")).is_err());
        assert!(p.check(ip("fd12::1")).is_ok());
        assert!(p.check(ip("fd00:ec2::254")).is_ok(), "an allowed block holds the metadata address too: the operator chose it");
        assert!(p.check(ip("fe80::1")).is_err());
        assert!(p.check(ip("169.254.169.254")).is_err());
        let denied = EgressPolicy::default().check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(denied.to_string(), "169.254.169.254 is a cloud metadata address");
        // An allow-list that holds everything turns the deny list off.
        let all = EgressPolicy::new(&["0.0.0.0/0".into(), "::/0".into()]).unwrap();
        for a in ["127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254", "10.0.0.1"] {
            assert!(all.check(ip(a)).is_ok(), "{a}");
        }
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("127.0.0.1".parse::<Cidr>().unwrap().to_string(), "127.0.0.1/32");
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!("fd00::/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!(!"0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("::1")), "families never mix");
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "::/129", "localhost", "10.0.0.0/", "10.0.0/8", "", "fd00::1/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let problems = EgressPolicy::new(&["10.0.0.0/8".into(), "nope".into(), "1.2.3.4/40".into()]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
