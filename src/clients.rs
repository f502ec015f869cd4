//! Who a request comes from, and each client's budget of uncached renders.
//!
//! A render is the one thing a client can make keiko work hard for, so every client gets a token
//! bucket of them (weserv limits uncached images per client the same way): a burst, refilled at a
//! steady rate; past it, 429 with `Retry-After`. Only renders that start count: cached
//! renditions and joining a render already in flight cost nothing.
//!
//! A client is its IP address, an IPv6 one by its /64 (one host usually holds a whole /64).
//! Behind a balancer every connection comes from the balancer, so a peer listed in
//! `--trusted-proxies` is asked who it forwards: the `X-Forwarded-For` list is read from the
//! right, skipping trusted proxies, and the first address that is not one is the client (what
//! HAProxy's `option forwardfor` and nginx's `$proxy_add_x_forwarded_for` append). From any other
//! peer the header is ignored, since anyone can send it.
//!
//! The buckets live in one locked map, touched only on the render path. It holds at most
//! [`MAX_CLIENTS`] entries; when full, idle clients (full buckets) are dropped, at most once every
//! [`SWEEP_EVERY`] (so that a flood of new addresses cannot make every request walk the map), and
//! until there is room again new clients share one overflow bucket: a flood from many addresses
//! is bounded in memory and in work too.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Most clients whose buckets are kept.
const MAX_CLIENTS: usize = 65_536;
/// Least time between two sweeps of a full map.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A client, as budgets count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    V4([u8; 4]),
    /// The /64 prefix.
    V6([u8; 8]),
    /// Everyone new while the map is full.
    Overflow,
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.octets()),
                None => Client::V6(v6.octets()[..8].try_into().expect("8 of 16 bytes")),
            },
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses or networks separated by commas or spaces: `10.0.0.1, 192.168.0.0/16, ::1`.
    pub(crate) fn parse(text: &str) -> anyhow::Result<TrustedProxies> {
        let nets = text
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| anyhow::anyhow!("--trusted-proxies: {s:?} is not an IP address or network"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` that carried `forwarded_for`.
    pub(crate) fn client(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> Client {
        let mut client = peer;
        if self.trusts(peer) {
            let list = forwarded_for.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
            for hop in list.rsplit(',').map(str::trim) {
                match hop.parse::<IpAddr>() {
                    Ok(ip) => {
                        client = ip;
                        if !self.trusts(ip) {
                            break;
                        }
                    }
                    // A hop keiko cannot read: the last one it could is the client.
                    Err(_) => break,
                }
            }
        }
        Client::of(client)
    }
}

/// The peer address of socket `fd`, if it has one.
pub(crate) fn peer(fd: RawFd) -> Option<IpAddr> {
    // SAFETY: a zeroed sockaddr_storage is valid; getpeername writes at most `len` bytes to it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above; `fd` is a socket its caller keeps open.
    if unsafe { libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut len) } != 0 {
        return None;
    }
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4: libc::sockaddr_in =
                unsafe { std::ptr::read((&addr as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&addr as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Every client's budget of renders.
pub(crate) struct RenderBudgets {
    burst: f64,
    per_second: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    by_client: HashMap<Client, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RenderBudgets {
    /// `burst` renders at once, refilled at `per_second`; None when `per_second` is 0 (no budget).
    pub(crate) fn new(burst: u32, per_second: f64) -> Option<RenderBudgets> {
        (per_second > 0.0).then(|| RenderBudgets {
            burst: f64::from(burst.max(1)),
            per_second,
            buckets: Mutex::default(),
        })
    }

    /// Takes one render from `client`'s budget, or says how long until it has one.
    pub(crate) fn take(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Buckets { by_client: buckets, last_sweep } = &mut *guard;
        let client = if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            if last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY) {
                *last_sweep = Some(now);
                buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
            }
            if buckets.len() >= MAX_CLIENTS {
                Client::Overflow
            } else {
                client
            }
        } else {
            client
        };
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: self.burst, at: now });
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, ::1").unwrap();
        let xff = Some(&b"203.0.113.9, 198.51.100.7, 10.1.2.3"[..]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), xff),
            Client::of(ip("198.51.100.7")),
            "rightmost untrusted"
        );
        assert_eq!(trusted.client(ip("192.0.2.1"), xff), Client::of(ip("192.0.2.1")), "an untrusted peer");
        assert_eq!(trusted.client(ip("10.0.0.1"), None), Client::of(ip("10.0.0.1")), "nothing forwarded");
        assert_eq!(trusted.client(ip("::1"), Some(b"garbage")), Client::of(ip("::1")));
        assert_eq!(trusted.client(ip("::ffff:10.0.0.1"), xff), Client::of(ip("198.51.100.7")), "mapped");
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("nope").is_err());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(Client::of(ip("2001:db8:1:2::1")), Client::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Client::of(ip("2001:db8:1:2::1")), Client::of(ip("2001:db8:1:3::1")));
        assert_eq!(Client::of(ip("::ffff:192.0.2.1")), Client::of(ip("192.0.2.1")));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let budgets = RenderBudgets::new(3, 2.0).unwrap();
        let (a, b) = (Client::of(ip("192.0.2.1")), Client::of(ip("192.0.2.2")));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(budgets.take(a, t0), Ok(()));
        }
        let wait = budgets.take(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(budgets.take(b, t0), Ok(()), "another client has its own");
        assert_eq!(budgets.take(a, t0 + Duration::from_millis(500)), Ok(()), "refilled at 2 a second");
        assert!(RenderBudgets::new(3, 0.0).is_none(), "0 turns budgets off");
    }

    #[test]
    fn the_map_is_bounded_and_new_clients_share_the_overflow() {
        let budgets = RenderBudgets::new(1, 0.001).unwrap();
        let t0 = Instant::now();
        for n in 0..MAX_CLIENTS as u32 {
            budgets.take(Client::V4(n.to_be_bytes()), t0).unwrap();
        }
        let newcomer = Client::V4([255, 255, 255, 255]);
        assert_eq!(budgets.take(newcomer, t0), Ok(()), "the overflow bucket's one token");
        assert!(budgets.take(Client::V4([255, 255, 255, 254]), t0).is_err(), "shared, and spent");
        assert!(budgets.buckets.lock().unwrap().by_client.len() <= MAX_CLIENTS + 1);
        // Much later every old bucket is full again: the next sweep (not the one before it, too
        // recent) makes room, and a newcomer gets a bucket of its own.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(budgets.take(Client::V4([255, 255, 255, 253]), later), Ok(()));
        assert!(budgets.buckets.lock().unwrap().by_client.len() < 10, "idle clients swept");
    }
}
