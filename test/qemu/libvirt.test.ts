// `qnet qemu convert --to libvirt`: lines beyond the table (escaping, a tap through the bridge
// helper, QEMU's default NIC, a mediated device) checked by the libvirt oracle, and one exact
// expected document per shape, as libvirt's domain format spells it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shellSplit } from '../../src/qemu/args.ts';
import { convert } from '../../src/qemu/convert.ts';
import { checkLibvirt } from './libvirt-oracle.ts';
import { parseXmlFragment } from '../helpers/xml.ts';

function libvirt(line: string): { args: string[]; xml: string } {
  const argv = shellSplit(line);
  const conv = convert(argv);
  assert.ok(conv.ok, `convert refused ${line}: ${conv.diagnostics.map((d) => d.message).join('; ')}`);
  const x = convert(argv, 'libvirt');
  assert.ok(x.ok && x.xml);
  return { args: conv.args!, xml: x.xml };
}

test('libvirt: markup in values is escaped, and the oracle holds', () => {
  const { args, xml } = libvirt(`-netdev tap,id=t0,ifname=tap0,script=/etc/a&b<c -device e1000,netdev=t0`);
  checkLibvirt(args, xml);
  assert.match(xml, /<script path='\/etc\/a&amp;b&lt;c'\/>/);
  assert.throws(() => parseXmlFragment(`<script path='/etc/a&b'/>`), /bad entity/, 'the reader refuses a bare &');
});

const GOLDEN: [string, string][] = [
  [`-netdev tap,id=t0,br=br0,helper=/usr/lib/qemu/qemu-bridge-helper -device virtio-net-pci,netdev=t0,addr=05.1`,
    `<interface type='bridge'>
  <source bridge='br0'/>
  <model type='virtio'/>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x1'/>
</interface>
`],
  // QEMU's default NIC when the line has no network option at all (e1000 on pc, e1000e on q35)
  ['-m 512', `<interface type='user'>\n  <model type='e1000'/>\n</interface>\n`],
  ['-M q35 -m 512', `<interface type='user'>\n  <model type='e1000e'/>\n</interface>\n`],
  [`-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/abc`,
    `<hostdev mode='subsystem' type='pci' managed='yes'>
  <source>
    <!-- sysfsdev=/sys/bus/mdev/devices/abc: give the host PCI address -->
  </source>
</hostdev>
`],
  ['-nic none -device vfio-pci,host=03:00.3,addr=06',
    `<hostdev mode='subsystem' type='pci' managed='yes'>
  <source>
    <address domain='0x0000' bus='0x03' slot='0x00' function='0x3'/>
  </source>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
</hostdev>
`],
  ['-netdev socket,id=s0,listen=:4444 -device rtl8139,netdev=s0,mac=52:54:00:AB:CD:EF',
    `<interface type='server'>
  <mac address='52:54:00:ab:cd:ef'/>
  <source port='4444'/>
  <model type='rtl8139'/>
</interface>
`],
  ['-netdev socket,id=s,udp=127.0.0.1:40005,localaddr=127.0.0.1:40006 -device e1000,netdev=s,mac=52:54:00:00:00:0b',
    `<interface type='udp'>
  <mac address='52:54:00:00:00:0b'/>
  <source address='127.0.0.1' port='40005'>
    <local address='127.0.0.1' port='40006'/>
  </source>
  <model type='e1000'/>
</interface>
`],
  ['-chardev socket,id=chr0,path=/path/to/socket -netdev type=vhost-user,id=net0,chardev=chr0 -device virtio-net-pci,netdev=net0',
    `<interface type='vhostuser'>
  <source type='unix' path='/path/to/socket' mode='client'/>
  <model type='virtio'/>
</interface>
`],
  ['-netdev tap,id=n0,ifname=tap0,script=no,downscript=no,queues=4,vhost=on -device virtio-net-pci,netdev=n0,mq=on,vectors=10,mac=52:54:00:01:02:03',
    `<interface type='ethernet'>
  <mac address='52:54:00:01:02:03'/>
  <target dev='tap0' managed='no'/>
  <model type='virtio'/>
  <driver name='vhost' queues='4'/>
  <!-- vectors=10: libvirt sizes MSI-X vectors itself -->
</interface>
`],
  ['-net nic,model=virtio -net user -net tap,ifname=tap0,script=no',
    `<!-- virtio-net-pci sits on QEMU hub 0 with 2 backend(s) and 1 NIC(s); libvirt has no hubs, so this needs <qemu:commandline> or a libvirt network -->
<interface type='user'>
  <model type='virtio'/>
</interface>
`],
  ['-device e1000,netdev=n1,mac=52:54:00:12:34:60 -netdev stream,id=n1,server=on,addr.type=inet,addr.host=localhost,addr.port=1234',
    `<!-- the stream backend has no libvirt <interface> type; use <qemu:commandline> with: -netdev stream,id=n1,server=on,addr.type=inet,addr.host=localhost,addr.port=1234 -->
<interface type='user'>
  <mac address='52:54:00:12:34:60'/>
  <model type='e1000'/>
</interface>
`],
  ['-device e1000,mac=52:54:00:12:34:58',
    `<!-- e1000 has no backend; libvirt needs one (type='user' shown, link down) -->
<interface type='user'>
  <mac address='52:54:00:12:34:58'/>
  <link state='down'/>
  <model type='e1000'/>
</interface>
`],
  ['-net nic -net user,net=10.0.2.0/24,hostfwd=tcp::2222-:22',
    `<interface type='user'>
  <ip family='ipv4' address='10.0.2.0' prefix='24'/>
  <!-- user-mode options without a libvirt equivalent for slirp: hostfwd; libvirt's passt backend (<backend type='passt'/> with <portForward>) covers hostfwd -->
  <model type='e1000'/>
</interface>
`],
];

for (const [line, want] of GOLDEN) {
  test(`libvirt: ${line}`, () => {
    const { args, xml } = libvirt(line);
    assert.equal(xml, want);
    checkLibvirt(args, xml);
  });
}
