/*
 * Polled virtio-net (modern interface, or legacy with `netlegacy`) and
 * just enough IPv4 on top for the `dhcp`, `ip=`/`peer=` and `spoof` tests:
 * a DHCP client (DISCOVER, OFFER, REQUEST, ACK), ARP requests and replies
 * both ways, ICMP echo both ways.
 *
 * The receive queue keeps RX_BUFS single-buffer chains posted and each is
 * offered again once read; the transmit queue sends one frame at a time
 * (vq_run). No MRG_RXBUF, no offloads: the header in front of every frame
 * is the 12-byte virtio_net_hdr_v1 (modern) or the 10-byte legacy
 * virtio_net_hdr, all zero on transmit. Every wait polls the receive ring
 * and answers ARP and ICMP echo requests for the guest's address
 * meanwhile, so two guests on one bridge can ping each other.
 */
#include "core.h"
#include "pci.h"
#include "virtio.h"

#define NET_DEVICE 0x1000
#define NET_DEVICE_MODERN 0x1041
#define NET_F_MAC (1UL << 5)
#define NET_F_STATUS (1UL << 16)
#define RX_QUEUE 0
#define TX_QUEUE 1
/* virtio_net_hdr_v1 in front of every frame on the modern interface; without num_buffers on the legacy one (no MRG_RXBUF). */
#define NET_HDR 12
#define NET_HDR_LEGACY 10
#define RX_BUFS 16
#define BUF_BYTES 2048
#define CFG_MAC 0

#define ETH_ALEN 6
#define ETH_HDR 14
#define ETH_MIN 60
#define ETH_MAX 1514
#define ETHERTYPE_IP 0x0800
#define ETHERTYPE_ARP 0x0806
#define ARP_LEN 28
#define ARP_REQUEST 1
#define ARP_REPLY 2
#define IP_HDR 20
#define IP_TTL 64
#define IPPROTO_ICMP 1
#define IPPROTO_UDP 17
#define UDP_HDR 8
#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO 8
#define ICMP_HDR 8
#define PING_ID 0x7e57
#define PING_DATA 32

/* BOOTP/DHCP (RFC 951, RFC 2131). */
#define DHCP_SERVER_PORT 67
#define DHCP_CLIENT_PORT 68
#define BOOTP_LEN 300
#define BOOTP_XID 4
#define BOOTP_YIADDR 16
#define BOOTP_CHADDR 28
#define BOOTP_OPTIONS 236
#define DHCP_XID 0x7e57d4c9
#define DHO_SUBNET_MASK 1
#define DHO_ROUTERS 3
#define DHO_DNS 6
#define DHO_REQUESTED_ADDRESS 50
#define DHO_MESSAGE_TYPE 53
#define DHO_SERVER_ID 54
#define DHO_PARAMETER_LIST 55
#define DHO_END 255
#define DHCPDISCOVER 1
#define DHCPOFFER 2
#define DHCPREQUEST 3
#define DHCPACK 5
#define DHCPNAK 6

/* Attempts (a second or two each) per step; a peer may still be booting; an echo that gets through comes back at once. */
#define STEP_TRIES 5
#define PEER_TRIES 30
#define SPOOF_TRIES 3
/* Seconds a peer keeps answering after its own ping succeeded, unless it answered an echo request already. */
#define SERVE_SECS 10

static struct {
	struct vdev dev;
	struct vq q[2]; /* RX_QUEUE, TX_QUEUE */
	u8 mac[ETH_ALEN]; /* the device's, from its configuration */
	u8 src[ETH_ALEN]; /* what frames are sent from (`spoof` changes it) */
	u32 hdr;          /* NET_HDR or NET_HDR_LEGACY */
	u32 ip;           /* 0 until leased or configured */
	u16 ip_id;
	/* ARP: the address being resolved, and its MAC once seen. */
	u32 arp_ip;
	u8 arp_mac[ETH_ALEN];
	volatile int arp_ok;
	/* ICMP: an echo reply from ping_ip arrived; echo requests answered so far. */
	u32 ping_ip;
	u16 ping_seq;
	volatile int echo_ok;
	u32 echo_answered;
	/* DHCP: the last reply for our xid. */
	volatile int dhcp_type;
	u32 yiaddr, server, router, mask;
} net;

static u8 net_rings[2][VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 rx_bufs[RX_BUFS][BUF_BYTES];
static u8 tx_buf[NET_HDR + ETH_MAX];

static const u8 broadcast[ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* ---- bytes ---- */

static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 get32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }

static void put16(u8 *p, u32 v)
{
	p[0] = (u8)(v >> 8);
	p[1] = (u8)v;
}

static void put32(u8 *p, u32 v)
{
	put16(p, v >> 16);
	put16(p + 2, v);
}

static int mac_eq(const u8 *a, const u8 *b)
{
	for (int i = 0; i < ETH_ALEN; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* The Internet checksum (RFC 1071) of `n` bytes, on top of the partial sum `sum`. */
static u16 csum(const u8 *p, u32 n, u32 sum)
{
	for (u32 i = 0; i + 1 < n; i += 2)
		sum += (u32)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (u32)p[n - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)~sum;
}

static void put_mac(const u8 *m)
{
	for (int i = 0; i < ETH_ALEN; i++) {
		if (i)
			putc(':');
		puthex(m[i], 2);
	}
}

static void put_ip(u32 a)
{
	for (int i = 3; i >= 0; i--) {
		putdec(a >> (8 * i) & 0xff);
		if (i)
			putc('.');
	}
}

/* A dotted quad at the start of `s`; 0 if it is not one. */
static u32 parse_ip(const char *s)
{
	u32 a = 0;
	for (int i = 0; i < 4; i++) {
		if (*s < '0' || *s > '9')
			return 0;
		u64 part = parse_dec(s);
		if (part > 255)
			return 0;
		a = a << 8 | (u32)part;
		while (*s >= '0' && *s <= '9')
			s++;
		if (i < 3 && *s++ != '.')
			return 0;
	}
	return a;
}

/* ---- frames out ---- */

/* The Ethernet header at the start of the transmit frame; returns what follows it. */
static u8 *eth_out(const u8 *dst, u32 type)
{
	u8 *f = tx_buf + net.hdr;
	memset(tx_buf, 0, net.hdr);
	memcpy(f, dst, ETH_ALEN);
	memcpy(f + ETH_ALEN, net.src, ETH_ALEN);
	put16(f + 12, type);
	return f + ETH_HDR;
}

/* Sends the transmit frame, `len` bytes after the Ethernet header, padded to the minimum frame. */
static void eth_send(u32 len)
{
	len += ETH_HDR;
	if (len < ETH_MIN) {
		memset(tx_buf + net.hdr + len, 0, ETH_MIN - len);
		len = ETH_MIN;
	}
	vq_desc(&net.q[TX_QUEUE], 0, tx_buf, net.hdr + len, 0);
	vq_run(&net.q[TX_QUEUE], 1);
}

/* An IPv4 header without options for `payload` bytes of `proto`; returns what follows it. */
static u8 *ip_out(u8 *ip, u32 proto, u32 src, u32 dst, u32 payload)
{
	ip[0] = 0x45;
	ip[1] = 0;
	put16(ip + 2, IP_HDR + payload);
	put16(ip + 4, net.ip_id++);
	put16(ip + 6, 0);
	ip[8] = IP_TTL;
	ip[9] = (u8)proto;
	put16(ip + 10, 0);
	put32(ip + 12, src);
	put32(ip + 16, dst);
	put16(ip + 10, csum(ip, IP_HDR, 0));
	return ip + IP_HDR;
}

static void arp_send(u32 op, const u8 *dst, const u8 *tha, u32 tpa)
{
	u8 *a = eth_out(dst, ETHERTYPE_ARP);
	put16(a, 1); /* Ethernet */
	put16(a + 2, ETHERTYPE_IP);
	a[4] = ETH_ALEN;
	a[5] = 4;
	put16(a + 6, op);
	memcpy(a + 8, net.src, ETH_ALEN);
	put32(a + 14, net.ip);
	memcpy(a + 18, tha, ETH_ALEN);
	put32(a + 24, tpa);
	eth_send(ARP_LEN);
}

/* An ICMP message of `type` to `dst` at `mac` with `data` after the id and sequence number. */
static void icmp_send(const u8 *mac, u32 dst, u32 type, u32 id, u32 seq, const u8 *data, u32 n)
{
	u8 *ip = eth_out(mac, ETHERTYPE_IP);
	u8 *icmp = ip_out(ip, IPPROTO_ICMP, net.ip, dst, ICMP_HDR + n);
	icmp[0] = (u8)type;
	icmp[1] = 0;
	put16(icmp + 2, 0);
	put16(icmp + 4, id);
	put16(icmp + 6, seq);
	memcpy(icmp + ICMP_HDR, data, n);
	put16(icmp + 2, csum(icmp, ICMP_HDR + n, 0));
	eth_send(IP_HDR + ICMP_HDR + n);
}

/* A broadcast DHCP message of `type` from 0.0.0.0 (RFC 2131 §4.4.1), 300 bytes of BOOTP. */
static void dhcp_send(u32 type)
{
	u8 *ip = eth_out(broadcast, ETHERTYPE_IP);
	u8 *udp = ip_out(ip, IPPROTO_UDP, 0, 0xffffffff, UDP_HDR + BOOTP_LEN);
	u8 *b = udp + UDP_HDR;
	memset(b, 0, BOOTP_LEN);
	b[0] = 1; /* BOOTREQUEST */
	b[1] = 1; /* Ethernet */
	b[2] = ETH_ALEN;
	put32(b + BOOTP_XID, DHCP_XID);
	memcpy(b + BOOTP_CHADDR, net.mac, ETH_ALEN);
	u8 *o = b + BOOTP_OPTIONS;
	static const u8 cookie[4] = {99, 130, 83, 99};
	memcpy(o, cookie, 4);
	o += 4;
	*o++ = DHO_MESSAGE_TYPE;
	*o++ = 1;
	*o++ = (u8)type;
	if (type == DHCPREQUEST) {
		*o++ = DHO_REQUESTED_ADDRESS;
		*o++ = 4;
		put32(o, net.yiaddr);
		o += 4;
		*o++ = DHO_SERVER_ID;
		*o++ = 4;
		put32(o, net.server);
		o += 4;
	}
	*o++ = DHO_PARAMETER_LIST;
	*o++ = 3;
	*o++ = DHO_SUBNET_MASK;
	*o++ = DHO_ROUTERS;
	*o++ = DHO_DNS;
	*o = DHO_END;
	put16(udp, DHCP_CLIENT_PORT);
	put16(udp + 2, DHCP_SERVER_PORT);
	put16(udp + 4, UDP_HDR + BOOTP_LEN);
	put16(udp + 6, 0);
	/* Pseudo-header: source 0.0.0.0, destination 255.255.255.255, protocol, UDP length. */
	u32 pseudo = 0xffff + 0xffff + IPPROTO_UDP + UDP_HDR + BOOTP_LEN;
	u16 sum = csum(udp, UDP_HDR + BOOTP_LEN, pseudo);
	put16(udp + 6, sum ? sum : 0xffff);
	eth_send(IP_HDR + UDP_HDR + BOOTP_LEN);
}

/* ---- frames in ---- */

static void arp_in(const u8 *f, const u8 *a, u32 n)
{
	(void)f;
	if (n < ARP_LEN || get16(a) != 1 || get16(a + 2) != ETHERTYPE_IP || a[4] != ETH_ALEN || a[5] != 4)
		return;
	u32 op = get16(a + 6), spa = get32(a + 14), tpa = get32(a + 24);
	/* Requests tell the sender's address as well as replies do. */
	if (net.arp_ip && spa == net.arp_ip && (op == ARP_REPLY || op == ARP_REQUEST)) {
		memcpy(net.arp_mac, a + 8, ETH_ALEN);
		net.arp_ok = 1;
	}
	if (op == ARP_REQUEST && net.ip && tpa == net.ip) {
		u8 sha[ETH_ALEN];
		memcpy(sha, a + 8, ETH_ALEN);
		arp_send(ARP_REPLY, sha, sha, spa);
	}
}

static void dhcp_in(const u8 *b, u32 n)
{
	static const u8 cookie[4] = {99, 130, 83, 99};
	if (n < BOOTP_OPTIONS + 4 || b[0] != 2 || get32(b + BOOTP_XID) != DHCP_XID ||
	    !mac_eq(b + BOOTP_CHADDR, net.mac))
		return;
	for (int i = 0; i < 4; i++)
		if (b[BOOTP_OPTIONS + i] != cookie[i])
			return;
	u32 type = 0, mask = 0, router = 0, server = 0;
	for (u32 i = BOOTP_OPTIONS + 4; i + 1 < n && b[i] != DHO_END;) {
		u32 code = b[i];
		if (!code) {
			i++;
			continue;
		}
		u32 len = b[i + 1];
		const u8 *v = b + i + 2;
		if (i + 2 + len > n)
			break;
		if (code == DHO_MESSAGE_TYPE && len == 1)
			type = v[0];
		else if (code == DHO_SUBNET_MASK && len == 4)
			mask = get32(v);
		else if (code == DHO_ROUTERS && len >= 4)
			router = get32(v);
		else if (code == DHO_SERVER_ID && len == 4)
			server = get32(v);
		i += 2 + len;
	}
	net.yiaddr = get32(b + BOOTP_YIADDR);
	net.mask = mask;
	net.router = router;
	net.server = server;
	net.dhcp_type = (int)type;
}

static void ip_in(const u8 *f, const u8 *ip, u32 n)
{
	if (n < IP_HDR || ip[0] >> 4 != 4)
		return;
	u32 ihl = (ip[0] & 0xf) * 4u, total = get16(ip + 2);
	if (ihl < IP_HDR || total < ihl || total > n || (get16(ip + 6) & 0x3fff))
		return;
	u32 src = get32(ip + 12), dst = get32(ip + 16);
	const u8 *p = ip + ihl;
	u32 len = total - ihl;
	if (ip[9] == IPPROTO_UDP && len >= UDP_HDR && get16(p) == DHCP_SERVER_PORT &&
	    get16(p + 2) == DHCP_CLIENT_PORT && get16(p + 4) >= UDP_HDR && get16(p + 4) <= len) {
		dhcp_in(p + UDP_HDR, get16(p + 4) - UDP_HDR);
		return;
	}
	if (ip[9] != IPPROTO_ICMP || len < ICMP_HDR || !net.ip || dst != net.ip || csum(p, len, 0))
		return;
	if (p[0] == ICMP_ECHO && len <= ETH_MAX - ETH_HDR - IP_HDR) {
		/* Copied: the reply is built in the transmit buffer, the request may be long. */
		static u8 data[ETH_MAX];
		memcpy(data, p + ICMP_HDR, len - ICMP_HDR);
		u8 mac[ETH_ALEN];
		memcpy(mac, f + ETH_ALEN, ETH_ALEN);
		icmp_send(mac, src, ICMP_ECHO_REPLY, get16(p + 4), get16(p + 6), data, len - ICMP_HDR);
		net.echo_answered++;
	} else if (p[0] == ICMP_ECHO_REPLY && src == net.ping_ip && get16(p + 4) == PING_ID) {
		net.echo_ok = 1;
	}
}

static void frame_in(const u8 *f, u32 n)
{
	if (n < ETH_HDR)
		return;
	/* Ours (either address), broadcast or multicast. */
	if (!(f[0] & 1) && !mac_eq(f, net.mac) && !mac_eq(f, net.src))
		return;
	u32 type = get16(f + 12);
	if (type == ETHERTYPE_ARP)
		arp_in(f, f + ETH_HDR, n - ETH_HDR);
	else if (type == ETHERTYPE_IP)
		ip_in(f, f + ETH_HDR, n - ETH_HDR);
}

/* Handles every frame the device returned and offers its buffer again. */
static void net_poll(void)
{
	u32 head, len, n = 0;
	while (vq_take(&net.q[RX_QUEUE], &head, &len)) {
		if (head < RX_BUFS && len > net.hdr && len <= BUF_BYTES)
			frame_in(rx_bufs[head] + net.hdr, len - net.hdr);
		vq_offer(&net.q[RX_QUEUE], (u16)head);
		n++;
	}
	if (n)
		vq_notify(&net.q[RX_QUEUE]);
}

/* Polls until *flag is set or about a second has passed; whether it was set. */
static int wait_a_second(volatile int *flag)
{
	struct deadline d;
	deadline_start(&d, 1);
	while (!*flag) {
		net_poll();
		if (deadline_passed(&d))
			return 0;
	}
	return 1;
}

/* ---- the steps ---- */

/* DISCOVER until an OFFER, then REQUEST until an ACK; the line's result. */
static int dhcp(void)
{
	static const int want[2] = {DHCPOFFER, DHCPACK};
	static const u32 send[2] = {DHCPDISCOVER, DHCPREQUEST};
	static const char *const step[2] = {"offer", "ack"};
	for (int s = 0; s < 2; s++) {
		int got = 0;
		for (int t = 0; t < STEP_TRIES && !got; t++) {
			net.dhcp_type = 0;
			dhcp_send(send[s]);
			got = wait_a_second(&net.dhcp_type);
		}
		if (!got) {
			puts(" dhcp ");
			puts(step[s]);
			puts(" timeout\n");
			return -1;
		}
		if (net.dhcp_type != want[s]) {
			puts(" dhcp type ");
			putdec((u32)net.dhcp_type);
			nl();
			return -1;
		}
	}
	net.ip = net.yiaddr;
	puts(" lease ");
	put_ip(net.ip);
	puts(" router ");
	put_ip(net.router);
	puts(" mask ");
	put_ip(net.mask);
	nl();
	return 0;
}

/* Echo requests to `ip` at net.arp_mac, one a second or two, until a reply; whether one came. */
static int echo(u32 ip, int tries)
{
	static u8 data[PING_DATA];
	for (u32 i = 0; i < PING_DATA; i++)
		data[i] = (u8)('a' + i % 26);
	net.ping_ip = ip;
	net.echo_ok = 0;
	for (int t = 0; t < tries; t++) {
		icmp_send(net.arp_mac, ip, ICMP_ECHO, PING_ID, ++net.ping_seq, data, PING_DATA);
		if (wait_a_second(&net.echo_ok))
			return 1;
	}
	return 0;
}

/* ARP for `ip`, then ping it; prints `NET ping <ip> <r>`; 0 when the echo came back. */
static int ping(u32 ip, int tries)
{
	static const u8 unknown[ETH_ALEN];
	int ok = 0;
	net.arp_ip = ip;
	net.arp_ok = 0;
	for (int t = 0; t < tries && !net.arp_ok; t++) {
		arp_send(ARP_REQUEST, broadcast, unknown, ip);
		wait_a_second(&net.arp_ok);
	}
	if (net.arp_ok)
		ok = echo(ip, tries);
	puts("NET ping ");
	put_ip(ip);
	puts(!net.arp_ok ? " noarp\n" : ok ? " ok\n" : " timeout\n");
	return ok ? 0 : -1;
}

/* The same ping from another source MAC: the device's with bit 7 of the last byte flipped. */
static void spoof(u32 ip)
{
	net.src[5] ^= 0x80;
	puts("NET spoof ");
	put_mac(net.src);
	nl();
	puts(echo(ip, SPOOF_TRIES) ? "NET spoof ping ok\n" : "NET spoof ping timeout\n");
	memcpy(net.src, net.mac, ETH_ALEN);
}

/* Keeps answering the peer until it was answered an echo request or SERVE_SECS passed. */
static void serve(void)
{
	puts("NET serving\n");
	struct deadline d;
	deadline_start(&d, SERVE_SECS);
	while (!net.echo_answered && !deadline_passed(&d))
		net_poll();
	puts("NET served ");
	putdec(net.echo_answered);
	nl();
}

/*
 * The first virtio-net, modern interface (legacy with `netlegacy`): its MAC, then a DHCP lease and a
 * ping of the router (`dhcp`), or a static address and a ping of `peer=`
 * (`ip=`), then the spoofed ping (`spoof`) and, with a static address,
 * serving the peer for a while. Resets the device when done.
 */
void test_net(const char *cl)
{
	static const u16 idx[2] = {RX_QUEUE, TX_QUEUE};
	u8 *const rings[2] = {net_rings[0], net_rings[1]};
	u64 features;
	const char *ip_arg = cmdline_find(cl, "ip="), *peer_arg = cmdline_find(cl, "peer=");
	int legacy = cmdline_find(cl, "netlegacy") != 0;
	puts("NET");
	if (virtio_start(&net.dev, pci_find(VIRTIO_VENDOR, NET_DEVICE, NET_DEVICE_MODERN, 0), legacy,
			 NET_F_MAC | NET_F_STATUS, &features, net.q, idx, rings, 2))
		return;
	net.hdr = legacy ? NET_HDR_LEGACY : NET_HDR;
	for (int i = 0; i < ETH_ALEN; i++)
		net.mac[i] = cfg8(&net.dev, CFG_MAC + i);
	memcpy(net.src, net.mac, ETH_ALEN);
	for (u16 i = 0; i < RX_BUFS && i < net.q[RX_QUEUE].size; i++) {
		vq_desc(&net.q[RX_QUEUE], i, rx_bufs[i], BUF_BYTES, DESC_F_WRITE);
		vq_offer(&net.q[RX_QUEUE], i);
	}
	vq_notify(&net.q[RX_QUEUE]);
	puts(legacy ? " legacy mac " : " mac ");
	put_mac(net.mac);
	u32 target;
	int tries = STEP_TRIES;
	if (ip_arg) {
		net.ip = parse_ip(ip_arg);
		target = peer_arg ? parse_ip(peer_arg) : 0;
		tries = PEER_TRIES;
		puts(" ip ");
		put_ip(net.ip);
		nl();
	} else if (!dhcp()) {
		target = net.router;
	} else {
		set_status(&net.dev, 0);
		return;
	}
	if (target && !ping(target, tries)) {
		if (cmdline_find(cl, "spoof"))
			spoof(target);
		if (ip_arg)
			serve();
	}
	set_status(&net.dev, 0);
}
