//! Outbound network for sandboxes that may have it: a veth pair from the host into the
//! sandbox's namespace, a /30 of `100.96.0.0/16` per sandbox, and source NAT through the host,
//! with the host's nf_tables keeping everything but public addresses out of reach.
//!
//! The rules live in one table, `inet nimbus_egress_v1`, made once per host by the first node
//! that enables egress (programmed over netlink; no `nft` binary is needed):
//!
//! ```text
//! forward (filter, priority -10):
//!   iifname "nb-*" meta nfproto != ipv4 drop
//!   iifname "nb-*" ip daddr NAMESERVER meta l4proto { tcp, udp } th dport 53 accept
//!                                  (for each of the host's IPv4 name servers, see `nameservers`)
//!   iifname "nb-*" ip daddr { 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
//!                             192.0.0/24, 192.168/16, 198.18/15, 224/3 } drop
//!   oifname "nb-*" ct state established,related accept
//!   oifname "nb-*" drop
//!   [only when this node had to turn IPv4 forwarding on: anything else forwarded is dropped,
//!    so the host forwards nothing it did not forward before]
//! input (filter, priority -10):
//!   iifname "nb-*" drop            (no port of the host: the node's, a worker's, anyone's)
//! postrouting (nat, priority 100):
//!   ip saddr 100.96.0.0/16 oifname != "nb-*" masquerade
//! ```
//!
//! Other sandboxes are in `100.64/10` and so refused like any private address. IPv6 is off on
//! both ends of every pair, and the host's end filters by reverse path (`rp_filter = 1`): what
//! comes from a sandbox carries its own address or is dropped.
//!
//! NAT makes the kernel track every connection of the host, so the table does not outlive its
//! use: a node that stops, or starts, with no sandbox link left on the host
//! ([`release_if_unused`]) deletes it and sets IPv4 forwarding back to what it was before the
//! table was made (remembered in [`STATE_FILE`]).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use crate::netlink::{
    Message, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, Socket,
};
use crate::{Error, Result, os};

const TABLE: &str = "nimbus_egress_v1";
/// What the node that made the table found: whether IPv4 forwarding was on.
pub const STATE_FILE: &str = "/run/nimbus-egress.json";
/// Host-side interface names start with this.
const PREFIX: &str = "nb-";
const SUBNET: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 0);
const SLOTS: u32 = 1 << 14;

/// Destinations a sandbox never reaches.
const BLOCKED: [(Ipv4Addr, u8); 10] = nimbus_types::net::BLOCKED_V4;

/// The node's egress: the host's rules are in place; hands out links to sandboxes.
pub struct Egress {
    used: Mutex<Vec<bool>>,
}

/// One sandbox's way out; the link is deleted when this is dropped.
pub struct EgressLink {
    egress: Arc<Egress>,
    slot: u32,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").finish_non_exhaustive()
    }
}

impl Egress {
    /// Installs the host's rules if no node did yet and turns IPv4 forwarding on.
    pub fn enable() -> Result<Arc<Self>> {
        crate::check_support()?;
        {
            let _host = HostLock::take()?;
            install()?;
        }
        Ok(Arc::new(Self {
            used: Mutex::new(vec![false; SLOTS as usize]),
        }))
    }

    /// Connects the network namespace of process `pid` (a sandbox's helper) to the outside:
    /// `eth0` there with a default route through the host.
    pub fn attach(self: &Arc<Self>, pid: u32) -> Result<EgressLink> {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(os("opening the sandbox's network namespace"))?;
        // Another node may have removed the rules while this one had no sandbox out: make sure
        // they are there, under the host's lock, before a link exists that needs them (and
        // that, once made, keeps any node from removing them).
        let _host = HostLock::take()?;
        install()?;
        let mut route = Socket::open(libc::NETLINK_ROUTE)?;
        // Names are the host's: another node on the same host may hold a slot this one thinks
        // free, which the kernel tells by refusing the name.
        let mut tries = 0;
        let slot = loop {
            let slot = self.take_slot()?;
            let mut link = Message::new(
                libc::RTM_NEWLINK,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                &ifinfo(0, 0, 0),
            );
            link.str(libc::IFLA_IFNAME, &host_name(slot))
                .begin(libc::IFLA_LINKINFO)
                .str(libc::IFLA_INFO_KIND, "veth")
                .begin(libc::IFLA_INFO_DATA)
                .begin(VETH_INFO_PEER)
                .raw(&ifinfo(0, 0, 0))
                .str(libc::IFLA_IFNAME, "eth0")
                .u32_ne(libc::IFLA_NET_NS_FD, netns.as_raw_fd() as u32)
                .end()
                .end()
                .end();
            match route.request("creating a veth pair", vec![link]) {
                Ok(()) => break slot,
                Err(Error::Os { source, .. })
                    if source.raw_os_error() == Some(libc::EEXIST) && tries < 64 =>
                {
                    tries += 1;
                    // Keep the slot marked: another node has it.
                }
                Err(e) => {
                    self.free_slot(slot);
                    return Err(e);
                }
            }
        };
        let link = EgressLink {
            egress: self.clone(),
            slot,
        };
        let (host, inside) = addresses(slot);
        let name = host_name(slot);
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        // Strict reverse-path filtering on the host's end: a packet from the sandbox must come
        // from its own /30, so nothing in it (even with raw sockets) sends as another address.
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "1")
            .map_err(os("turning on reverse-path filtering for a sandbox link"))?;
        let index = if_index(&name)?;
        route.request(
            "configuring the host's end of a veth pair",
            vec![address(index, host), up(index)],
        )?;
        // The sandbox's end is configured from inside its namespace, on a thread of its own.
        let fd = netns.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || -> Result<()> {
                // SAFETY: setns moves only this short-lived thread, which ends right after.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(os("entering the sandbox's network namespace")(
                        std::io::Error::last_os_error(),
                    ));
                }
                let _ = std::fs::write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1");
                let index = if_index("eth0")?;
                let mut inner = Socket::open(libc::NETLINK_ROUTE)?;
                inner.request(
                    "configuring the sandbox's end of a veth pair",
                    vec![
                        address(index, inside),
                        up(index),
                        default_route(index, host),
                    ],
                )
            })
            .join()
            .map_err(|_| Error::Unsupported("the namespace thread panicked".into()))?
        })?;
        Ok(link)
    }

    fn take_slot(&self) -> Result<u32> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| Error::Unsupported("egress slots poisoned".into()))?;
        let free = used
            .iter()
            .position(|u| !u)
            .ok_or_else(|| Error::Unsupported("no egress address is free".into()))?;
        used[free] = true;
        Ok(free as u32)
    }

    fn free_slot(&self, slot: u32) {
        if let Ok(mut used) = self.used.lock()
            && let Some(u) = used.get_mut(slot as usize)
        {
            *u = false;
        }
    }
}

impl EgressLink {
    /// The sandbox's address.
    pub fn address(&self) -> Ipv4Addr {
        addresses(self.slot).1
    }
}

impl Drop for EgressLink {
    fn drop(&mut self) {
        // Deleting the host's end deletes the pair; a namespace that is gone took it already.
        if let Ok(index) = if_index(&host_name(self.slot))
            && let Ok(mut route) = Socket::open(libc::NETLINK_ROUTE)
        {
            let _ = route.request(
                "deleting a veth pair",
                vec![Message::new(
                    libc::RTM_DELLINK,
                    NLM_F_REQUEST | NLM_F_ACK,
                    &ifinfo(0, index, 0),
                )],
            );
        }
        self.egress.free_slot(self.slot);
    }
}

/// Makes the table if it is not there (another node's is as good) and turns IPv4 forwarding
/// on, recording what it found if it made the table. Called under the [`HostLock`].
fn install() -> Result<()> {
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map_err(os("reading /proc/sys/net/ipv4/ip_forward"))?;
    let was_forwarding = forwarding.trim() == "1";
    let mut nft = Socket::open(libc::NETLINK_NETFILTER)?;
    match nft.request("creating the egress table", rules(!was_forwarding, true)) {
        Ok(()) => {
            let state = format!("{{\"forwarding_was\": {was_forwarding}}}\n");
            if let Err(e) = std::fs::write(STATE_FILE, state) {
                tracing::warn!(error = %e, "could not record the host's forwarding setting");
            }
            tracing::info!(table = TABLE, "egress rules installed");
        }
        // It is there already.
        Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    if !was_forwarding {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(os("turning on IPv4 forwarding"))?;
    }
    Ok(())
}

/// The host-wide lock under which nodes make, use and remove the rules, so that one node
/// never removes them between another's check and its new link.
struct HostLock {
    _file: std::fs::File,
}

impl HostLock {
    const PATH: &str = "/run/nimbus-egress.lock";

    fn take() -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Self::PATH)
            .map_err(os("opening the egress lock"))?;
        // SAFETY: flock on a descriptor this function owns; it is released when the file is
        // closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(os("taking the egress lock")(std::io::Error::last_os_error()));
        }
        Ok(Self { _file: file })
    }
}

/// Deletes the egress table and restores IPv4 forwarding if no sandbox link is left on the
/// host (none of this node's, none of another's). Returns whether it deleted the table.
pub fn release_if_unused() -> bool {
    let Ok(_host) = HostLock::take() else {
        return false;
    };
    let in_use = std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        })
        .unwrap_or(true);
    if in_use {
        return false;
    }
    let Ok(mut socket) = Socket::open(libc::NETLINK_NETFILTER) else {
        return false;
    };
    let mut delete = nft(NFT_MSG_DELTABLE, 0);
    delete.str(1, TABLE);
    let batch = vec![
        Message::new(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            &nfgen(0, NFNL_SUBSYS_NFTABLES),
        ),
        delete,
        Message::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            &nfgen(0, NFNL_SUBSYS_NFTABLES),
        ),
    ];
    match socket.request("deleting the egress table", batch) {
        Ok(()) => {}
        Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            return false;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not delete the egress table");
            return false;
        }
    }
    if let Ok(state) = std::fs::read_to_string(STATE_FILE) {
        if state.contains("\"forwarding_was\": false") {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "0");
        }
        let _ = std::fs::remove_file(STATE_FILE);
    }
    tracing::info!(table = TABLE, "egress rules removed: no sandbox uses them");
    true
}

const VETH_INFO_PEER: u16 = 1;

fn host_name(slot: u32) -> String {
    format!("{PREFIX}{slot}")
}

/// The host's and the sandbox's addresses in a slot's /30.
fn addresses(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(SUBNET) + slot * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn if_index(name: &str) -> Result<i32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| Error::Unsupported("bad interface name".into()))?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(os(format!("finding interface {name}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(index as i32)
}

/// `struct ifinfomsg`.
fn ifinfo(flags: u32, index: i32, change: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0] = libc::AF_UNSPEC as u8;
    out[4..8].copy_from_slice(&index.to_ne_bytes());
    out[8..12].copy_from_slice(&flags.to_ne_bytes());
    out[12..16].copy_from_slice(&change.to_ne_bytes());
    out
}

fn up(index: i32) -> Message {
    let flag = libc::IFF_UP as u32;
    Message::new(
        libc::RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        &ifinfo(flag, index, flag),
    )
}

fn address(index: i32, address: Ipv4Addr) -> Message {
    // struct ifaddrmsg: family, prefix length, flags, scope, index.
    let mut header = [0u8; 8];
    header[0] = libc::AF_INET as u8;
    header[1] = 30;
    header[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    let mut m = Message::new(
        libc::RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        &header,
    );
    m.attr(libc::IFA_LOCAL, &address.octets())
        .attr(libc::IFA_ADDRESS, &address.octets());
    m
}

fn default_route(index: i32, gateway: Ipv4Addr) -> Message {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut header = [0u8; 12];
    header[0] = libc::AF_INET as u8;
    header[4] = libc::RT_TABLE_MAIN;
    header[5] = libc::RTPROT_BOOT;
    header[6] = libc::RT_SCOPE_UNIVERSE;
    header[7] = libc::RTN_UNICAST;
    let mut m = Message::new(
        libc::RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        &header,
    );
    m.attr(libc::RTA_GATEWAY, &gateway.octets())
        .u32_ne(libc::RTA_OIF, index as u32);
    m
}

// ---- nf_tables ----

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;

const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const REG: u32 = 1;
/// `ct state established,related`: the states' bits as the kernel keeps them.
const CT_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);

/// `struct nfgenmsg` for a message of `family`.
fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn nft(kind: u16, extra: u16) -> Message {
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | extra,
        &nfgen(NFPROTO_INET, 0),
    )
}

/// One expression of a rule.
enum Expr {
    /// Loads a meta key (interface names, protocol family) into the register.
    Meta(u32),
    /// Loads `len` bytes of the network header at `offset`.
    Network {
        offset: u32,
        len: u32,
    },
    /// Loads the transport header's destination port.
    DestinationPort,
    /// Loads the connection's state bits.
    CtState,
    /// `register & mask`.
    And(Vec<u8>),
    Cmp(u32, Vec<u8>),
    Verdict(u32),
    Masquerade,
}

fn add_expr(m: &mut Message, e: &Expr) {
    let name = match e {
        Expr::Meta(_) => "meta",
        Expr::Network { .. } | Expr::DestinationPort => "payload",
        Expr::CtState => "ct",
        Expr::And(_) => "bitwise",
        Expr::Cmp(..) => "cmp",
        Expr::Verdict(_) => "immediate",
        Expr::Masquerade => "masq",
    };
    m.begin(1).str(1, name); // NFTA_LIST_ELEM, NFTA_EXPR_NAME
    if matches!(e, Expr::Masquerade) {
        m.end();
        return;
    }
    m.begin(2); // NFTA_EXPR_DATA
    match e {
        Expr::Meta(key) => {
            m.u32_be(2, *key).u32_be(1, REG); // NFTA_META_KEY, NFTA_META_DREG
        }
        Expr::Network { offset, len } => {
            m.u32_be(1, REG) // NFTA_PAYLOAD_DREG
                .u32_be(2, NFT_PAYLOAD_NETWORK_HEADER)
                .u32_be(3, *offset)
                .u32_be(4, *len);
        }
        Expr::DestinationPort => {
            m.u32_be(1, REG)
                .u32_be(2, NFT_PAYLOAD_TRANSPORT_HEADER)
                .u32_be(3, 2)
                .u32_be(4, 2);
        }
        Expr::CtState => {
            m.u32_be(1, REG).u32_be(2, NFT_CT_STATE); // NFTA_CT_DREG, NFTA_CT_KEY
        }
        Expr::And(mask) => {
            m.u32_be(1, REG) // NFTA_BITWISE_SREG
                .u32_be(2, REG) // NFTA_BITWISE_DREG
                .u32_be(3, mask.len() as u32)
                .begin(4)
                .attr(1, mask)
                .end()
                .begin(5)
                .attr(1, &vec![0u8; mask.len()])
                .end();
        }
        Expr::Cmp(op, data) => {
            m.u32_be(1, REG).u32_be(2, *op).begin(3).attr(1, data).end();
        }
        Expr::Verdict(code) => {
            m.u32_be(1, 0) // NFTA_IMMEDIATE_DREG: the verdict register
                .begin(2) // NFTA_IMMEDIATE_DATA
                .begin(2) // NFTA_DATA_VERDICT
                .u32_be(1, *code) // NFTA_VERDICT_CODE
                .end()
                .end();
        }
        Expr::Masquerade => {}
    }
    m.end().end();
}

fn rule(chain: &str, exprs: &[Expr]) -> Message {
    let mut m = nft(NFT_MSG_NEWRULE, NLM_F_APPEND);
    m.str(1, TABLE).str(2, chain).begin(4); // NFTA_RULE_TABLE, _CHAIN, _EXPRESSIONS
    for e in exprs {
        add_expr(&mut m, e);
    }
    m.end();
    m
}

fn chain(name: &str, kind: &str, hook: u32, priority: i32) -> Message {
    let mut m = nft(NFT_MSG_NEWCHAIN, 0);
    m.str(1, TABLE) // NFTA_CHAIN_TABLE
        .str(3, name) // NFTA_CHAIN_NAME
        .begin(4) // NFTA_CHAIN_HOOK
        .u32_be(1, hook)
        .u32_be(2, priority as u32)
        .end()
        .u32_be(5, NF_ACCEPT) // NFTA_CHAIN_POLICY
        .str(7, kind); // NFTA_CHAIN_TYPE
    m
}

fn from_sandbox() -> Expr {
    Expr::Meta(NFT_META_IIFNAME)
}

fn prefix() -> Vec<u8> {
    PREFIX.as_bytes().to_vec()
}

fn mask(bits: u8) -> Vec<u8> {
    (u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0))
        .to_be_bytes()
        .to_vec()
}

/// The batch that makes the table: new (`exclusive`) so that a second node finds it made.
fn rules(drop_other_forwarding: bool, exclusive: bool) -> Vec<Message> {
    let mut out = Vec::new();
    out.push(Message::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        &nfgen(0, NFNL_SUBSYS_NFTABLES),
    ));
    let mut table = nft(NFT_MSG_NEWTABLE, if exclusive { NLM_F_EXCL } else { 0 });
    table.str(1, TABLE);
    out.push(table);
    out.push(chain("forward", "filter", NF_INET_FORWARD, -10));
    out.push(chain("input", "filter", NF_INET_LOCAL_IN, -10));
    out.push(chain("postrouting", "nat", NF_INET_POST_ROUTING, 100));
    use Expr::*;
    out.push(rule(
        "forward",
        &[
            from_sandbox(),
            Cmp(NFT_CMP_EQ, prefix()),
            Meta(NFT_META_NFPROTO),
            Cmp(NFT_CMP_NEQ, vec![NFPROTO_IPV4]),
            Verdict(NF_DROP),
        ],
    ));
    for server in nameservers() {
        for protocol in [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8] {
            out.push(rule(
                "forward",
                &[
                    from_sandbox(),
                    Cmp(NFT_CMP_EQ, prefix()),
                    Network { offset: 16, len: 4 },
                    Cmp(NFT_CMP_EQ, server.octets().to_vec()),
                    Meta(NFT_META_L4PROTO),
                    Cmp(NFT_CMP_EQ, vec![protocol]),
                    DestinationPort,
                    Cmp(NFT_CMP_EQ, 53u16.to_be_bytes().to_vec()),
                    Verdict(NF_ACCEPT),
                ],
            ));
        }
    }
    for (network, bits) in BLOCKED {
        out.push(rule(
            "forward",
            &[
                from_sandbox(),
                Cmp(NFT_CMP_EQ, prefix()),
                Network { offset: 16, len: 4 },
                And(mask(bits)),
                Cmp(NFT_CMP_EQ, network.octets().to_vec()),
                Verdict(NF_DROP),
            ],
        ));
    }
    out.push(rule(
        "forward",
        &[
            from_sandbox(),
            Cmp(NFT_CMP_EQ, prefix()),
            Verdict(NF_ACCEPT),
        ],
    ));
    out.push(rule(
        "forward",
        &[
            Meta(NFT_META_OIFNAME),
            Cmp(NFT_CMP_EQ, prefix()),
            CtState,
            And(CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec()),
            Cmp(NFT_CMP_NEQ, vec![0; 4]),
            Verdict(NF_ACCEPT),
        ],
    ));
    out.push(rule(
        "forward",
        &[
            Meta(NFT_META_OIFNAME),
            Cmp(NFT_CMP_EQ, prefix()),
            Verdict(NF_DROP),
        ],
    ));
    if drop_other_forwarding {
        out.push(rule("forward", &[Verdict(NF_DROP)]));
    }
    out.push(rule(
        "input",
        &[from_sandbox(), Cmp(NFT_CMP_EQ, prefix()), Verdict(NF_DROP)],
    ));
    out.push(rule(
        "postrouting",
        &[
            Meta(NFT_META_NFPROTO),
            Cmp(NFT_CMP_EQ, vec![NFPROTO_IPV4]),
            Network { offset: 12, len: 4 },
            And(mask(16)),
            Cmp(NFT_CMP_EQ, SUBNET.octets().to_vec()),
            Meta(NFT_META_OIFNAME),
            Cmp(NFT_CMP_NEQ, prefix()),
            Masquerade,
        ],
    ));
    out.push(Message::new(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        &nfgen(0, NFNL_SUBSYS_NFTABLES),
    ));
    out
}

/// The host's IPv4 name servers that a sandbox can use: systemd-resolved's upstream servers
/// if it runs (its own stub on 127.0.0.53 is the host's loopback), else `/etc/resolv.conf`'s;
/// never a loopback address.
pub fn nameservers() -> Vec<Ipv4Addr> {
    ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
                .filter(|a| !a.is_loopback() && !a.is_unspecified())
                .collect::<Vec<_>>()
        })
        .find(|servers| !servers.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_disjoint_slash_30s_in_the_sandbox_subnet() {
        assert_eq!(
            addresses(0),
            (Ipv4Addr::new(100, 96, 0, 1), Ipv4Addr::new(100, 96, 0, 2))
        );
        assert_eq!(
            addresses(SLOTS - 1),
            (
                Ipv4Addr::new(100, 96, 255, 253),
                Ipv4Addr::new(100, 96, 255, 254)
            )
        );
        assert_eq!(host_name(SLOTS - 1).len(), 8);
        assert_eq!(mask(10), vec![255, 192, 0, 0]);
        assert_eq!(mask(3), vec![224, 0, 0, 0]);
    }

    /// A process in a network namespace of its own, given time to get there.
    fn in_new_namespace() -> std::process::Child {
        let child = std::process::Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        child
    }

    /// A namespace made by `unshare -n` gets eth0, an address and a route through the host.
    #[test]
    fn a_namespace_is_connected_and_disconnected() {
        if crate::check_support().is_err() {
            return;
        }
        let egress = Egress::enable().unwrap();
        let mut child = in_new_namespace();
        let link = egress.attach(child.id()).unwrap();
        let name = host_name(link.slot);
        assert!(if_index(&name).is_ok());
        let inside = std::process::Command::new("nsenter")
            .args(["-t", &child.id().to_string(), "-n", "ip", "-4", "route"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&inside.stdout).into_owned();
        let (host, _) = addresses(link.slot);
        assert!(
            routes.contains(&format!("default via {host} dev eth0")),
            "{routes}"
        );

        // A "public" server (a documentation address) and a private one, in a namespace of
        // the test's own, routed from the host; and a server on the host itself.
        let pid = child.id().to_string();
        let sh = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .status()
                .unwrap()
        };
        let tag = std::process::id() % 10000;
        let (ns, outer) = (format!("nbtest{tag}"), format!("nbt{tag}"));
        sh(&format!(
            "ip netns add {ns} && ip link add {outer} type veth peer name inner netns {ns} && \
             ip addr add 203.0.113.254/24 dev {outer} && ip link set {outer} up && \
             ip route add 10.77.0.0/24 via 203.0.113.1 && \
             ip -n {ns} addr add 203.0.113.1/24 dev inner && ip -n {ns} addr add 10.77.0.1/24 dev inner && \
             ip -n {ns} link set inner up && ip -n {ns} link set lo up && \
             ip -n {ns} route add default via 203.0.113.254"
        ));
        let mut server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "--bind",
                "0.0.0.0",
                "18080",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let host_server = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let host_port = host_server.local_addr().unwrap().port();
        std::thread::sleep(std::time::Duration::from_millis(800));
        let reach = |address: &str, port: u16| {
            std::process::Command::new("nsenter")
                .args(["-t", &pid, "-n", "python3", "-c"])
                .arg(format!(
                    "import socket,sys\ns=socket.socket();s.settimeout(1)\n\
                     sys.exit(0 if s.connect_ex(('{address}',{port}))==0 else 1)"
                ))
                .status()
                .unwrap()
                .success()
        };
        let public = reach("203.0.113.1", 18080);
        let private = reach("10.77.0.1", 18080);
        let own_host = reach(&host.to_string(), host_port);
        let outer_host = reach("203.0.113.254", host_port);
        let _ = server.kill();
        let _ = server.wait();
        sh(&format!(
            "ip route del 10.77.0.0/24; ip link del {outer}; ip netns del {ns}"
        ));
        assert!(public, "a public address is reachable");
        assert!(!private, "a private address is not");
        assert!(!own_host, "the host is not, through the sandbox's gateway");
        assert!(!outer_host, "nor through any of its other addresses");
        drop(link);
        assert!(if_index(&name).is_err());
        let _ = child.kill();
        let _ = child.wait();
        // With no link left the table goes, and forwarding is back as it was.
        assert!(release_if_unused());
        assert!(!release_if_unused());
        // A node whose rules another removed makes them again before its next link, and
        // nobody removes them while a link exists.
        let mut again = in_new_namespace();
        let link = egress.attach(again.id()).unwrap();
        assert!(!release_if_unused(), "a link still uses the rules");
        drop(link);
        let _ = again.kill();
        let _ = again.wait();
        assert!(release_if_unused(), "the rules were made again");
    }
}
