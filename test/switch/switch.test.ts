import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Port } from '../../src/link/port.ts';
import { Switch } from '../../src/switch/switch.ts';
import { makeFrame, tmpDir } from '../link/peers.ts';
import { waitFor } from '../helpers/wait.ts';

/** An in-memory port: what the switch sends lands in `sent`; inject() plays a received frame. */
class MemPort extends Port {
  sent: Buffer[] = [];
  constructor(name: string) { super('mem', name); }
  send(frame: Buffer): void { this.counters.txFrames++; this.sent.push(Buffer.from(frame)); }
  inject(frame: Buffer): void { this.deliver(frame); }
  protected closeTransport(): void {}
}

const M = (n: number) => `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`;
const BCAST = 'ff:ff:ff:ff:ff:ff';

function setup(n: number, cfg: Parameters<Switch['attach']>[1][] = []) {
  const sw = new Switch();
  const ports = Array.from({ length: n }, (_, i) => new MemPort(`p${i}`));
  const sps = ports.map((p, i) => sw.attach(p, cfg[i] ?? {}));
  return { sw, ports, sps };
}

test('switch: floods unknown and broadcast, then forwards learned unicast to one port', () => {
  const { sw, ports } = setup(3);
  ports[0].inject(makeFrame(BCAST, M(1)));
  assert.deepEqual(ports.map((p) => p.sent.length), [0, 1, 1]);
  ports[1].inject(makeFrame(M(1), M(2)));
  assert.deepEqual(ports.map((p) => p.sent.length), [1, 1, 1]);
  ports[0].inject(makeFrame(M(2), M(1)));
  assert.deepEqual(ports.map((p) => p.sent.length), [1, 2, 1]);
  assert.equal(sw.stats.forwarded, 2);
  ports[2].inject(makeFrame(M(9), M(3)));
  assert.deepEqual(ports.map((p) => p.sent.length), [2, 3, 1]);
  sw.close();
});

test('switch: a frame to a MAC on its own ingress port is filtered', () => {
  const { sw, ports, sps } = setup(2);
  ports[0].inject(makeFrame(BCAST, M(1)));
  ports[0].inject(makeFrame(M(1), M(5)));
  assert.equal(ports[1].sent.length, 1);
  assert.equal(sps[0].drops.filtered, 1);
  sw.close();
});

test('switch: isolated ports reach non-isolated ones only', () => {
  const { sw, ports, sps } = setup(3, [{}, { isolated: true }, { isolated: true }]);
  ports[1].inject(makeFrame(BCAST, M(2)));
  assert.deepEqual(ports.map((p) => p.sent.length), [1, 0, 0]);
  ports[2].inject(makeFrame(M(2), M(3)));
  assert.equal(ports[1].sent.length, 0);
  assert.equal(sps[2].drops.isolation, 1);
  ports[0].inject(makeFrame(BCAST, M(1)));
  assert.deepEqual(ports.map((p) => p.sent.length), [1, 1, 1]);
  ports[2].inject(makeFrame(M(1), M(3)));
  assert.equal(ports[0].sent.length, 2);
  sw.close();
});

test('switch: anti-spoofing drops and counts foreign source MACs', () => {
  const { sw, ports, sps } = setup(3, [{ antiSpoof: [M(1)] }, { antiSpoof: true }, {}]);
  ports[0].inject(makeFrame(BCAST, M(1)));
  ports[0].inject(makeFrame(BCAST, M(7)));
  assert.equal(sps[0].drops.spoof, 1);
  ports[1].inject(makeFrame(BCAST, M(2))); // locks to M(2)
  ports[1].inject(makeFrame(BCAST, M(8)));
  assert.equal(sps[1].drops.spoof, 1);
  assert.equal(ports[2].sent.length, 2);
  sw.close();
});

test('switch: 802.1Q access and trunk ports tag and untag', () => {
  const { sw, ports, sps } = setup(4, [
    { vlan: { mode: 'access', vid: 10 } },
    { vlan: { mode: 'access', vid: 20 } },
    { vlan: { mode: 'trunk', allowed: [10, 20], native: 30 } },
    { vlan: { mode: 'access', vid: 30 } },
  ]);
  ports[0].inject(makeFrame(BCAST, M(1), 64, 0x0800));
  assert.deepEqual(ports.map((p) => p.sent.length), [0, 0, 1, 0]);
  const tagged = ports[2].sent[0];
  assert.equal(tagged.readUInt16BE(12), 0x8100);
  assert.equal(tagged.readUInt16BE(14) & 0xfff, 10);
  assert.equal(tagged.readUInt16BE(16), 0x0800);
  assert.equal(tagged.length, 68);
  // tagged VLAN 20 from the trunk reaches the VLAN 20 access port untagged
  const t20 = Buffer.concat([tagged.subarray(0, 14), Buffer.from([0, 20]), tagged.subarray(16)]);
  ports[2].inject(t20);
  assert.equal(ports[1].sent.length, 1);
  assert.equal(ports[1].sent[0].readUInt16BE(12), 0x0800);
  assert.equal(ports[1].sent[0].length, 64);
  // untagged on the trunk is the native VLAN 30
  ports[2].inject(makeFrame(BCAST, M(3)));
  assert.equal(ports[3].sent.length, 1);
  // a tagged frame arriving on an access port is dropped
  ports[0].inject(t20);
  assert.equal(sps[0].drops.vlan, 1);
  // a VLAN the trunk does not carry
  ports[2].inject(Buffer.concat([tagged.subarray(0, 14), Buffer.from([0, 99]), tagged.subarray(16)]));
  assert.equal(sps[2].drops.vlan, 1);
  // a priority-tagged frame (VID 0) on an access port belongs to its VLAN
  ports[1].inject(Buffer.concat([tagged.subarray(0, 14), Buffer.from([0xa0, 0]), tagged.subarray(16)]));
  assert.equal(ports[2].sent.at(-1)!.readUInt16BE(14) & 0xfff, 20);
  sw.close();
});

test('switch: MTU enforcement and malformed source MACs', () => {
  const sw = new Switch({ mtu: 1500 });
  const a = new MemPort('a');
  const b = new MemPort('b');
  const sa = sw.attach(a);
  sw.attach(b);
  a.inject(makeFrame(BCAST, M(1), 1514));
  a.inject(makeFrame(BCAST, M(1), 1515));
  a.inject(makeFrame(BCAST, '01:00:5e:00:00:01'));
  assert.equal(b.sent.length, 1);
  assert.equal(sa.drops.mtu, 1);
  assert.equal(sa.drops.malformed, 1);
  sw.close();
});

test('switch: MAC aging forgets silent hosts; detaching a port forgets its MACs', async () => {
  const sw = new Switch({ agingMs: 200 });
  const ports = [new MemPort('a'), new MemPort('b'), new MemPort('c')];
  ports.forEach((p) => sw.attach(p));
  ports[0].inject(makeFrame(BCAST, M(1)));
  assert.equal(sw.lookup(M(1)), ports[0]);
  await waitFor(() => sw.lookup(M(1)) === undefined, { what: 'the silent MAC to age out' });
  assert.equal(sw.lookup(M(1)), undefined);
  ports[1].inject(makeFrame(BCAST, M(2)));
  ports[1].close();
  assert.equal(sw.lookup(M(2)), undefined);
  assert.equal(sw.ports.size, 2);
  sw.close();
});

test('switch: pcap capture is readable by tshark', { skip: !hasTshark() }, () => {
  const file = path.join(tmpDir(), 'cap.pcap');
  const { sw, ports } = setup(2);
  sw.startCapture(file);
  for (let i = 0; i < 5; i++) ports[0].inject(makeFrame(BCAST, M(1), 100, 0x88b5, i));
  sw.stopCapture();
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'eth.src'], { encoding: 'utf8' });
  assert.deepEqual(out.trim().split('\n'), Array(5).fill(M(1)));
  sw.close();
});

function hasTshark(): boolean {
  try { execFileSync('tshark', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

test('switch: directTo names the egress port only when the switch would just deliver the frame', () => {
  const mac = (s: string) => Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
  const { sw, ports } = setup(4, [{}, {}, { isolated: true }, { isolated: true }]);
  const direct = (from: number, src: string, dst: string) => ports[from].directTo!(mac(src), mac(dst));
  assert.equal(direct(0, M(1), M(2)), null, 'unknown destination: through the switch (it floods)');
  ports[1].inject(makeFrame(BCAST, M(2)));
  assert.equal(direct(0, M(1), M(2)), null, 'a source not yet learned on its port: through the switch');
  ports[0].inject(makeFrame(BCAST, M(1)));
  const before = sw.stats.forwarded;
  assert.equal(direct(0, M(1), M(2)), ports[1]);
  assert.equal(sw.stats.forwarded, before + 1, 'counted as forwarded');
  assert.equal(direct(0, M(1), BCAST), null, 'broadcast: through the switch');
  assert.equal(direct(1, M(2), M(2)), null, 'own port');
  ports[2].inject(makeFrame(BCAST, M(3)));
  ports[3].inject(makeFrame(BCAST, M(4)));
  assert.equal(direct(2, M(3), M(4)), null, 'isolated to isolated');
  assert.equal(direct(2, M(3), M(1)), ports[0], 'isolated to an uplink');
  const dir = tmpDir('qnet-sw-');
  sw.startCapture(path.join(dir, 'c.pcap'));
  assert.equal(direct(0, M(1), M(2)), null, 'a capture sees every frame: through the switch');
  sw.stopCapture();
  sw.detach(ports[0]);
  assert.equal(ports[0].directTo, null, 'a detached port has no switch to ask');
  sw.close();
});

test('switch: directTo refuses VLAN crossings that need a tag', () => {
  const mac = (s: string) => Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
  const { sw, ports } = setup(3, [{ vlan: { mode: 'access', vid: 10 } }, { vlan: { mode: 'trunk', allowed: [10], native: 1 } }, { vlan: { mode: 'access', vid: 10 } }]);
  ports[0].inject(makeFrame(BCAST, M(1)));
  ports[2].inject(makeFrame(BCAST, M(3)));
  const tagged = Buffer.alloc(64);
  mac(BCAST).copy(tagged, 0); mac(M(2)).copy(tagged, 6);
  tagged.writeUInt16BE(0x8100, 12); tagged.writeUInt16BE(10, 14); tagged.writeUInt16BE(0x0800, 16);
  ports[1].inject(tagged);
  assert.equal(ports[0].directTo!(mac(M(1)), mac(M(2))), null, 'the trunk wants VLAN 10 tagged');
  assert.equal(ports[0].directTo!(mac(M(1)), mac(M(3))), ports[2], 'same access VLAN');
  assert.equal(ports[1].directTo!(mac(M(2)), mac(M(1))), null, 'from a trunk: through the switch');
  sw.close();
});
