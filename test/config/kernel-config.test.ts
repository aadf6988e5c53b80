// Kernel networks in qnet.yaml: `bridge:` and the modes that need it, uplink/stp/allow, forwards
// as DNAT on the host's addresses, static hosts by VM name; every error names file:line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { parseConfig } from '../../src/config/config.ts';
import { ip4ToString } from '../../src/wire/addr.ts';
import { tmpDir } from '../link/peers.ts';

const dirs = () => { const d = tmpDir(); return { runtimeDir: path.join(d, 'run'), stateDir: path.join(d, 'state') }; };

test('kernel config: every mode on a bridge', () => {
  const c = parseConfig(`networks:
  - name: lab
    mode: nat
    bridge: qnbr0
    subnet: 10.10.0.0/24
    stp: false
    mtu: 1400
    allow: [alice, "@kvm", "1001"]
    forwards: [{ proto: tcp, hostPort: 8080, guest: web, guestPort: 80 }, { hostAddr: 198.51.100.2, hostPort: 2222, guest: web, guestPort: 22 }]
    hosts: [{ vm: web, ip: 10.10.0.10 }]
  - name: quiet
    mode: isolated
    bridge: qnbr1
    subnet: 10.20.0.0/24
  - name: lab2
    mode: routed
    bridge: qnbr2
    subnet: 10.30.0.0/24
  - name: wide
    mode: open
    bridge: qnbr3
    subnet: 10.40.0.0/24
  - name: lan
    mode: bridge
    bridge: br0
    uplink: eth0
    stp: true
`, 'qnet.yaml', dirs());
  const [lab, quiet, routed, open, lan] = c.networks;
  assert.deepEqual([lab.bridge, lab.stp, lab.mtu, lab.allow, lab.attach], ['qnbr0', false, 1400, ['alice', '@kvm', '1001'], []]);
  assert.deepEqual(lab.forwards.map((f) => f.hostAddr), ['', '198.51.100.2'], 'kernel forwards default to every host address');
  assert.deepEqual(lab.hosts, [{ mac: '', ip: lab.hosts[0].ip, name: 'web', vm: 'web' }]);
  assert.equal(ip4ToString(lab.hosts[0].ip), '10.10.0.10');
  assert.deepEqual([quiet.mode, quiet.bridge, routed.mode, open.mode], ['isolated', 'qnbr1', 'routed', 'open']);
  assert.deepEqual([lan.mode, lan.bridge, lan.uplink, lan.stp, lan.mtu, lan.attach, lan.forwards], ['bridge', 'br0', 'eth0', true, 0, [], []]);
  assert.deepEqual(c.warnings, []);
});

const bad: [string, RegExp][] = [
  ['  - name: a\n    mode: routed\n    subnet: 10.0.0.0/24\n', /qnet\.yaml:3:11: networks\[0\]\.mode: mode routed needs a kernel bridge/],
  ['  - name: a\n    subnet: 10.0.0.0/24\n    allow: [bob]\n', /qnet\.yaml:4:5: networks\[0\]\.allow: 'allow' is for kernel networks/],
  ['  - name: a\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n    uplink: eth0\n', /:5:5: networks\[0\]\.uplink: uplink: is for mode bridge/],
  ['  - name: a\n    bridge: this-name-is-too-long\n    subnet: 10.0.0.0/24\n', /:3:13: networks\[0\]\.bridge: 'this-name-is-too-long' is not a Linux interface name/],
  ['  - name: a\n    mode: bridge\n    bridge: br0\n    subnet: 10.0.0.0/24\n', /:5:5: networks\[0\]\.subnet: mode bridge puts VMs on the LAN of br0/],
  ['  - name: a\n    mode: isolated\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n    forwards: [{ hostPort: 80, guest: x, guestPort: 80 }]\n', /:6:5: networks\[0\]\.forwards: an isolated network has no way in/],
  ['  - name: a\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n    forwards: [{ hostAddr: 127.0.0.1, hostPort: 80, guest: x, guestPort: 80 }]\n', /networks\[0\]\.forwards\[0\]\.hostAddr: a kernel network forwards with DNAT/],
  ['  - name: a\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n    attach: [unix:/tmp/a.sock]\n', /:5:5: networks\[0\]\.attach: a kernel network \(bridge: qnbr0\) is joined through taps/],
  ['  - name: a\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n  - name: b\n    bridge: qnbr0\n    subnet: 10.1.0.0/24\n', /:6:13: networks\[1\]\.bridge: bridge qnbr0 is already network 'a's/],
  ['  - name: a\n    mode: user\n    bridge: qnbr0\n', /networks\[0\]\.bridge: mode user/],
  ['  - name: a\n    subnet: 10.0.0.0/24\n    hosts: [{ ip: 10.0.0.5 }]\n', /networks\[0\]\.hosts\[0\]: give the host either mac: .* or vm:/],
  ['  - name: a\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n    stp: yes please\n', /networks\[0\]\.stp: expected true or false/],
];
for (const [text, re] of bad) {
  test(`kernel config: rejected: ${re.source.slice(0, 70)}`, () => {
    assert.throws(() => parseConfig(`networks:\n${text}`, 'qnet.yaml', dirs()), re);
  });
}
