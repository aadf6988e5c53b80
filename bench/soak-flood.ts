// The hostile guest of bench/soak.ts, in its own process: raw frames on a qnet stream
// socket, as fast as the socket takes them, until killed.
//
//   soak-flood.ts SOCK GATEWAY_IP GUEST_IP KINDS
//     KINDS: comma-separated syn,udp,dhcp,dns (default all)
//     SOAK_SPOOF=1: SYN/UDP from random in- and off-subnet sources (the case 1 attack);
//                   0: from GUEST_IP only
//
// Destinations are 198.51.100.0/24 (TCP) and 203.0.113.0/24 (UDP), documentation ranges that
// soak.ts routes to a tap nobody reads inside the daemon's namespace: nothing leaves the machine.
// Prints one JSON line per second with the frames sent so far.
import net from 'node:net';
import { ETHERTYPE_IPV4, writeEthernet } from '../src/wire/ethernet.ts';
import { IPPROTO_TCP, IPPROTO_UDP, writeIpv4 } from '../src/wire/ipv4.ts';
import { finishUdpV4, writeUdp } from '../src/wire/udp.ts';
import { finishTcpV4, writeTcp } from '../src/wire/tcp.ts';
import { parseIp4 } from '../src/wire/addr.ts';

const [sockPath, gwStr, guestStr, kindsArg] = process.argv.slice(2);
const gw = parseIp4(gwStr)!;
const me = parseIp4(guestStr)!;
const kinds = (kindsArg ?? 'syn,udp,dhcp,dns').split(',');
const spoof = process.env.SOAK_SPOOF !== '0';
const MY_MAC = Buffer.from([0x52, 0x54, 0x00, 0xee, 0xee, 0x01]);
const GW_MAC = Buffer.from([0x52, 0x55, (gw >>> 24) & 255, (gw >>> 16) & 255, (gw >>> 8) & 255, gw & 255]);
const BCAST = Buffer.alloc(6, 0xff);
const sent: Record<string, number> = Object.fromEntries(kinds.map((k) => [k, 0]));

let seed = 0x9e3779b9;
const rnd = (): number => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return seed >>> 0; };
const src = (): number => (spoof ? (rnd() & 1 ? ((gw & 0xffffff00) | (2 + (rnd() % 250))) >>> 0 : rnd() | 0x01000000) >>> 0 : me);

function frame(len: number): { b: Buffer; o: number } {
  const b = Buffer.alloc(4 + len);
  b.writeUInt32BE(len, 0);
  return { b, o: 4 };
}

function syn(): Buffer {
  const { b, o } = frame(54);
  const s = src(), d = (parseIp4('198.51.100.0')! | (1 + (rnd() % 254))) >>> 0;
  writeEthernet(b, o, GW_MAC, MY_MAC, ETHERTYPE_IPV4);
  writeIpv4(b, o + 14, s, d, IPPROTO_TCP, 20);
  writeTcp(b, o + 34, 1024 + (rnd() % 60000), 1 + (rnd() % 65535), rnd(), 0, 0x02, 65535);
  finishTcpV4(b, o + 34, 20, s, d);
  return b;
}

function udp(dst: number, dport: number, payload: Buffer, s = src(), dstMac = GW_MAC, srcMac = MY_MAC, sport = 1024 + (rnd() % 60000)): Buffer {
  const { b, o } = frame(42 + payload.length);
  writeEthernet(b, o, dstMac, srcMac, ETHERTYPE_IPV4);
  writeIpv4(b, o + 14, s, dst, IPPROTO_UDP, 8 + payload.length);
  writeUdp(b, o + 34, sport, dport, payload.length);
  payload.copy(b, o + 42);
  finishUdpV4(b, o + 34, s, dst);
  return b;
}

function dhcp(): Buffer {
  const m = Buffer.alloc(300);
  m[0] = 1; m[1] = 1; m[2] = 6;
  m.writeUInt32BE(rnd(), 4);
  m.writeUInt16BE(0x8000, 10);
  const mac = Buffer.from([0x52, 0x54, 0x01, rnd() & 255, rnd() & 255, rnd() & 255]);
  mac.copy(m, 28);
  m.writeUInt32BE(0x63825363, 236);
  Buffer.from([53, 1, 1, 255]).copy(m, 240);
  return udp(0xffffffff, 67, m, 0, BCAST, mac, 68);
}

function dns(): Buffer {
  const name = `r${rnd().toString(36)}.soak.example`;
  const labels = name.split('.').flatMap((l) => [l.length, ...Buffer.from(l)]);
  const q = Buffer.from([rnd() & 255, rnd() & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1]);
  return udp(gw, 53, q, me);
}

const makers: Record<string, () => Buffer> = {
  syn, dhcp, dns,
  udp: () => udp((parseIp4('203.0.113.0')! | (1 + (rnd() % 254))) >>> 0, 1 + (rnd() % 65535), Buffer.alloc(32)),
};

const sock = net.connect(sockPath);
sock.on('error', (e) => { process.stderr.write(`flood: ${e.message}\n`); process.exit(1); });
sock.on('close', () => { process.stderr.write('flood: qnet closed the connection\n'); process.exit(2); });
sock.once('connect', () => {
  const pump = (): void => {
    for (;;) {
      const parts: Buffer[] = [];
      for (let i = 0; i < 64; i++) for (const k of kinds) { parts.push(makers[k]()); sent[k]++; }
      if (!sock.write(Buffer.concat(parts))) { sock.once('drain', pump); return; }
    }
  };
  pump();
  setInterval(() => process.stdout.write(JSON.stringify({ sent }) + '\n'), 1000);
});
