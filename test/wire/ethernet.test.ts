import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN, EthernetHeader, parseEthernet, popVlan,
  pushVlan, writeEthernet,
} from '../../src/wire/ethernet.ts';
import { ArpPacket, ARP_REPLY, ARP_REQUEST, parseArp, writeArp } from '../../src/wire/arp.ts';
import { macToString } from '../../src/wire/addr.ts';
import { FRAMES } from './_vectors.ts';
import { checkTruncations } from './_util.ts';

const GUEST = Buffer.from('525400123456', 'hex');
const GW = Buffer.from('525400123502', 'hex');

test('ethernet: known ARP request frame, untagged and tagged', () => {
  const eth = new EthernetHeader();
  const f = FRAMES.arp_request;
  assert.equal(parseEthernet(f, 0, f.length, eth), null);
  assert.equal(eth.tagCount, 0);
  assert.equal(eth.vlanId, -1);
  assert.equal(eth.pcp, -1);
  assert.equal(eth.ethertype, ETHERTYPE_ARP);
  assert.equal(eth.payloadOffset, 14);
  assert.equal(macToString(f, eth.dstOffset), 'ff:ff:ff:ff:ff:ff');
  assert.equal(macToString(f, eth.srcOffset), '52:54:00:12:34:56');

  const t = FRAMES.vlan_arp;
  assert.equal(parseEthernet(t, 0, t.length, eth), null);
  assert.deepEqual([eth.tagCount, eth.tpid, eth.vlanId, eth.pcp, eth.dei, eth.ethertype, eth.payloadOffset],
    [1, ETHERTYPE_VLAN, 100, 3, false, ETHERTYPE_ARP, 18]);
  // popVlan gives back the untagged frame (minus padding); pushVlan restores the tagged one.
  const untagged = popVlan(t);
  assert.deepEqual(untagged, f.subarray(0, 42));
  assert.deepEqual(pushVlan(untagged, 100, 3), t);
  assert.equal(popVlan(f), f, 'untagged frame is returned as is');
});

test('ethernet: QinQ, DEI, and too many tags', () => {
  const inner = pushVlan(FRAMES.arp_request, 200, 0);
  const f = pushVlan(inner, 4095, 7, ETHERTYPE_QINQ);
  f[14] |= 0x10; // DEI
  const eth = new EthernetHeader();
  assert.equal(parseEthernet(f, 0, f.length, eth), null);
  assert.deepEqual([eth.tagCount, eth.tpid, eth.vlanId, eth.pcp, eth.dei, eth.innerVlanId, eth.ethertype, eth.payloadOffset],
    [2, ETHERTYPE_QINQ, 4095, 7, true, 200, ETHERTYPE_ARP, 22]);
  assert.deepEqual(popVlan(popVlan(f)), FRAMES.arp_request);
  const three = pushVlan(f, 1, 0);
  assert.equal(parseEthernet(three, 0, three.length, eth), 'ethernet: too many vlan tags');
  assert.throws(() => pushVlan(Buffer.alloc(11), 1), RangeError);
});

test('ethernet: write then parse, at an offset', () => {
  const b = Buffer.alloc(100);
  let p = writeEthernet(b, 5, GW, GUEST, ETHERTYPE_IPV4);
  assert.equal(p, 19);
  const eth = new EthernetHeader();
  assert.equal(parseEthernet(b, 5, 100, eth), null);
  assert.deepEqual([eth.dstOffset, eth.srcOffset, eth.ethertype, eth.payloadOffset, eth.payloadEnd], [5, 11, 0x0800, 19, 100]);
  assert.ok(b.subarray(5, 11).equals(GW) && b.subarray(11, 17).equals(GUEST));
  p = writeEthernet(b, 0, GW, GUEST, ETHERTYPE_IPV4, 42, 5);
  assert.equal(p, 18);
  assert.equal(parseEthernet(b, 0, 60, eth), null);
  assert.deepEqual([eth.tagCount, eth.vlanId, eth.pcp, eth.ethertype], [1, 42, 5, ETHERTYPE_IPV4]);
});

test('ethernet: truncations', () => {
  const eth = new EthernetHeader();
  checkTruncations('eth', parseEthernet, FRAMES.arp_request, 0, 60, eth, 14);
  const qinq = pushVlan(pushVlan(FRAMES.arp_request.subarray(0, 14), 1), 2);
  checkTruncations('eth qinq', parseEthernet, qinq, 0, qinq.length, eth, qinq.length);
  assert.equal(parseEthernet(qinq, 0, qinq.length + 1, eth), 'ethernet: truncated', 'end beyond buffer');
});

test('arp: known request, reply round trip, malformed', () => {
  const f = FRAMES.arp_request;
  const arp = new ArpPacket();
  assert.equal(parseArp(f, 14, f.length, arp), null);
  assert.equal(arp.op, ARP_REQUEST);
  assert.equal(macToString(f, arp.senderMacOffset), '52:54:00:12:34:56');
  assert.equal(arp.senderIp, 0x0a00020f);
  assert.equal(macToString(f, arp.targetMacOffset), '00:00:00:00:00:00');
  assert.equal(arp.targetIp, 0x0a000202);
  assert.equal(arp.payloadEnd, 42);

  const b = Buffer.alloc(64, 0xee);
  const end = writeArp(b, 14, ARP_REPLY, GW, 0x0a000202, GUEST, 0x0a00020f);
  assert.equal(end, 42);
  assert.equal(parseArp(b, 14, 64, arp), null);
  assert.deepEqual([arp.op, arp.senderIp, arp.targetIp], [ARP_REPLY, 0x0a000202, 0x0a00020f]);
  assert.ok(b.subarray(arp.senderMacOffset, arp.senderMacOffset + 6).equals(GW));
  assert.ok(b.subarray(arp.targetMacOffset, arp.targetMacOffset + 6).equals(GUEST));
  // Request written by us is byte-identical to the captured one.
  const r = Buffer.alloc(28);
  writeArp(r, 0, ARP_REQUEST, GUEST, 0x0a00020f, Buffer.alloc(6), 0x0a000202);
  assert.ok(r.equals(f.subarray(14, 42)));

  checkTruncations('arp', parseArp, f, 14, 42, arp, 42);
  for (const [i, v] of [[1, 6], [3, 0xdd], [4, 8], [5, 16]] as const) {
    const bad = Buffer.from(f);
    bad[14 + i] = v;
    assert.equal(parseArp(bad, 14, bad.length, arp), 'arp: unsupported hardware or protocol type');
  }
});
