// /metrics from a real daemon: what a guest's port is refused (source validation), the
// limit it hit and the descriptor budget appear with their network, port and reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/config/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { tmpDir } from '../link/peers.ts';
import { waitFor } from '../helpers/wait.ts';
import { RawGuest, ip } from '../network/raw-guest.ts';

test('metrics: source drops per port and reason, limit hits with their port and value, the descriptor budget', async (t) => {
  const dir = tmpDir('qnet-metrics-');
  const sock = path.join(dir, 'run', 'a.sock');
  const d = await Daemon.start(parseConfig(`runtimeDir: ${dir}/run
stateDir: ${dir}/state
networks:
  - name: a
    subnet: 10.6.0.0/24
    upstreams: [127.0.0.1:9]
    attach: [unix:${sock}]
    limits: { addressesPerPort: 1 }
`, 'qnet.yaml'));
  t.after(async () => { await d.stop(); fs.rmSync(dir, { recursive: true, force: true }); });
  const g = await RawGuest.connect(sock, '52:54:00:00:06:01', { ip: ip('10.6.0.1'), mac: '52:55:0a:06:00:01' });
  t.after(() => g.close());
  g.sendUdp(ip('198.51.100.7'), 1000, ip('10.6.0.1'), 53, Buffer.from('x')); // off the subnet
  g.sendUdp(ip('10.6.0.50'), 1000, ip('10.6.0.1'), 9, Buffer.from('x')); // its one address
  g.sendUdp(ip('10.6.0.51'), 1000, ip('10.6.0.1'), 9, Buffer.from('x')); // a second: over the cap
  await g.barrier();
  const port = (d.net('a').stats() as { ports: { id: number; macs: string[] }[] }).ports.find((p) => p.macs.includes('52:54:00:00:06:01'))!;
  let text = '';
  await waitFor(() => (text = d.metrics()).includes('source.tooMany'), { what: 'the drops in /metrics' });
  assert.match(text, new RegExp(`qnet_port_dropped_total\\{network="a",port="${port.id}",vm="",reason="source.offSubnet"\\} 1`));
  assert.match(text, new RegExp(`qnet_port_dropped_total\\{network="a",port="${port.id}",vm="",reason="source.tooMany"\\} 1`));
  assert.match(text, /qnet_limit_hits_total\{network="a",limit="source.addressesPerPort",port="stream#\d+\([^)]*\)"\} 1/);
  assert.match(text, /qnet_limit\{network="a",limit="source.addressesPerPort",port="[^"]+"\} 1/);
  assert.match(text, /qnet_fd_budget\{part="flows"\} \d+/);
});
