#!/usr/bin/env node
// A stand-in for `ip` that a `qnet host ... --sysfs FIXTURE` child process runs (QNET_IP=this
// file): answers the read-only queries from the JSON state FakeKernel.saveIpState() wrote
// ($QNET_FAKE_IP_STATE) and logs every call to $QNET_FAKE_IP_STATE.calls. Plain JS so it
// starts fast.
import fs from 'node:fs';
const file = process.env.QNET_FAKE_IP_STATE;
const st = JSON.parse(fs.readFileSync(file, 'utf8'));
const args = process.argv.slice(2);
fs.appendFileSync(`${file}.calls`, JSON.stringify(args) + '\n');
const a = [...args];
if (a[0] === '-json') a.shift();
const six = a[0] === '-6' ? (a.shift(), true) : false;
const fail = (m) => { process.stderr.write(m + '\n'); process.exit(1); };
if (a[0] === 'addr' && a[1] === 'show' && a[2] === 'dev') {
  const i = st.ifs[a[3]];
  if (!i) fail(`Device "${a[3]}" does not exist.`);
  process.stdout.write(JSON.stringify([{ ifname: a[3], addr_info: i.addr_info }]));
} else if (a[0] === 'route' && a[1] === 'show' && a[2] === 'default') {
  process.stdout.write(JSON.stringify(st.routes.filter((r) => r.family === (six ? 6 : 4)).map((r) => ({ dst: 'default', gateway: r.gateway, dev: r.dev }))));
} else if (a[0] === 'link' && a[1] === 'show' && a[2] === 'dev') {
  const i = st.ifs[a[3]];
  if (!i) fail(`Device "${a[3]}" does not exist.`);
  process.stdout.write(JSON.stringify([{ ifname: a[3], address: i.address }]));
} else {
  fail(`fake ip: unsupported: ip ${args.join(' ')}`);
}
