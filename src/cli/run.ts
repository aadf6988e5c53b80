// `qnet run NET [--name VM] [--model M] -- qemu-system-x86_64 ARGS...`: start QEMU with a NIC
// on a qnet network.
//
// QEMU is the stream *server* here (`-netdev stream,server=on`, a unix socket in the daemon's
// runtime directory) and the daemon connects to it once the VM is registered. That way a
// daemon restart only drops the connection for a moment: the new daemon reads the VM records
// and reconnects, and the guest keeps its link and its lease. QEMU also gets a QMP socket next
// to it, which `qnet vm ls` and `qnet info network` use.
//
// On a hostdev network (a VF pool) the daemon hands out a VF instead: qnet run adds
// `-nic none -device vfio-pci,host=BDF,id=qnet0` and the QMP socket, waits for the QMP socket
// rather than a stream socket, and the VF goes back (driver and settings restored) when QEMU
// exits, or when qnet run dies (the daemon notices its pid is gone).
//
// qnet run stays in the foreground as QEMU's parent: QEMU inherits the terminal, SIGINT/SIGTERM/
// SIGHUP are passed on to it, and when it exits the VM is unregistered and qnet run exits with
// QEMU's status.
//
// On a kernel network (bridge:) the daemon makes a tap for the VM instead (named after it,
// owned by the caller, on the bridge) and hands its descriptor over the API socket; QEMU gets
// it as fd 3 (`-netdev tap,fd=3`, plus a /dev/vhost-net descriptor as fd 4 when there is one).
// This works for any user the network's `allow:` list names, without setuid. The tap goes away
// by itself when QEMU exits; a daemon restart does not touch it.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import type { AttachResult, StatusInfo, TapResult, VmRecord } from '../daemon/types.ts';
import { ApiError, seg, type ApiClient } from '../daemon/client.ts';
import { defaultRuntimeDir } from '../common/paths.ts';
import { closeFd, fdRequest } from '../host/fdpass.ts';
import { parseQemuOpts } from '../qemu/opts.ts';
import { client, parse, runCommand, UsageError } from './common.ts';
import { randomVmName } from './attach.ts';

const USAGE = `usage: qnet run NET [--name VM] [--model M] [--mac MAC] -- qemu-system-x86_64 ARGS...

Runs QEMU with one more NIC, on qnet network NET, and registers the VM with the daemon.
qnet adds to your arguments:
  -netdev stream,id=qnet0,server=on,addr.type=unix,addr.path=RUNDIR/vms/VM.sock
  (on a kernel network: -netdev tap,id=qnet0,fd=3, a tap the daemon made for the VM)
  (on a VF pool, mode hostdev: -nic none -device vfio-pci,host=BDF,id=qnet0, a free VF)
  -device MODEL,netdev=qnet0,mac=MAC  -qmp unix:RUNDIR/vms/VM.qmp,server=on,wait=off
  --name VM    the VM's name (default: QEMU's -name, else a random one); it keeps its MAC
  --model M    the NIC model (default: the daemon's, virtio-net-pci)
  --mac MAC    this MAC instead of the one qnet keeps for the name (it keeps this one after)
  --api PATH   the daemon's API socket (default: $QNET_API or the runtime directory)
Ctrl-C and SIGTERM go to QEMU; qnet run exits with QEMU's exit status. There is no --json:
the VM's record is in \`qnet vm ls --json\`.`;

const SOCKET_WAIT_MS = 60_000;
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** `-name foo` or `-name guest=foo,...` in QEMU's arguments */
export function qemuName(args: string[]): string | undefined {
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] !== '-name' && args[i] !== '--name') continue;
    const p = parseQemuOpts(args[i + 1], { impliedKey: 'guest' });
    const g = p.entries.find((e) => e.key === 'guest');
    if (g && /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(g.value)) return g.value;
  }
  return undefined;
}

/** vhost: 'fd' = the descriptor after the tap's, 'open' = QEMU opens /dev/vhost-net itself. */
export function qnetQemuArgs(o: { sock: string; qmp: string; model: string; mac: string } | { tapFd: number; vhost?: 'fd' | 'open'; qmp: string; model: string; mac: string }): string[] {
  const netdev = 'tapFd' in o
    ? `tap,id=qnet0,fd=${o.tapFd}${o.vhost === 'fd' ? `,vhost=on,vhostfd=${o.tapFd + 1}` : o.vhost === 'open' ? ',vhost=on' : ''}`
    : `stream,id=qnet0,server=on,addr.type=unix,addr.path=${o.sock.replace(/,/g, ',,')}`;
  return [
    '-netdev', netdev,
    '-device', `${o.model},netdev=qnet0,mac=${o.mac}`,
    '-qmp', `unix:${o.qmp.replace(/,/g, ',,')},server=on,wait=off`,
  ];
}

/** Where this user's VM sockets go: the daemon's runtime directory if we may write it, else our own. */
function vmsDirFor(status: StatusInfo): string {
  const own = path.join(status.runtimeDir, 'vms');
  try {
    fs.mkdirSync(own, { recursive: true, mode: 0o700 });
    fs.accessSync(own, fs.constants.W_OK);
    return own;
  } catch {
    const mine = path.join(defaultRuntimeDir(), 'vms');
    fs.mkdirSync(mine, { recursive: true, mode: 0o700 });
    return mine;
  }
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

function rmQuiet(p: string): void {
  try { fs.unlinkSync(p); } catch { /* gone */ }
}

async function unregister(api: ApiClient, name: string): Promise<void> {
  try {
    await api.del(`/v1/vms/${seg(name)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return;
    process.stderr.write(`qnet run: could not unregister VM ${name}: ${(e as Error).message}\n`);
  }
}

export async function main(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const ours = dash >= 0 ? argv.slice(0, dash) : argv;
  const qemu = dash >= 0 ? argv.slice(dash + 1) : [];
  return runCommand('run', USAGE, async () => {
    const { values, positionals } = parse(ours, { name: { type: 'string' }, model: { type: 'string' }, mac: { type: 'string' } });
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    // like `podman run` and `virsh start`, qnet run has no JSON output: it stays in the
    // foreground as QEMU's parent and QEMU's console may be on stdout; the record is a listing
    if (values.json) throw new UsageError('--json: qnet run prints no listing (QEMU keeps the terminal); see the VM with `qnet vm ls --json`');
    if (positionals.length !== 1) throw new UsageError('give exactly one network before --: qnet run NET -- qemu-system-x86_64 ...');
    if (qemu.length === 0) throw new UsageError('give the QEMU command after --: qnet run NET -- qemu-system-x86_64 ARGS...');
    const netName = positionals[0];
    const [program, ...userArgs] = qemu;
    const api = client(values.api);

    const name = values.name ?? qemuName(userArgs) ?? randomVmName();
    const status = await api.get<StatusInfo>('/v1/status');
    const vmsDir = vmsDirFor(status);
    const sock = path.join(vmsDir, `${name}.sock`);
    const qmp = path.join(vmsDir, `${name}.qmp`);
    if (Buffer.byteLength(qmp) > 107) throw new Error(`the VM's socket path ${qmp} is too long for a unix socket (over 107 bytes); use a shorter --name or runtime directory`);

    const existing = (await api.get<VmRecord[]>('/v1/vms')).find((v) => v.name === name);
    if (existing) {
      if (pidAlive(existing.pid)) throw new Error(`VM '${name}' is already running (pid ${existing.pid}); pick another --name`);
      await unregister(api, name); // its qnet run died without cleaning up
    }
    rmQuiet(sock);
    rmQuiet(qmp);

    // pid: on a hostdev network the VF is ours until QEMU registers (the daemon reaps it if we die)
    const body: Record<string, string | number> = { name, pid: process.pid };
    if (values.model) body.model = values.model;
    if (values.mac) body.mac = values.mac;
    const att = await api.post<AttachResult>(`/v1/networks/${seg(netName)}/attach`, body);
    const hostdev = att.hostdev;
    let tap: TapResult | undefined;
    let fds: number[] = [];
    if (att.kind === 'kernel') {
      // the daemon makes the tap and hands it over with its descriptor
      let res;
      try {
        res = fdRequest<TapResult & { error?: string }>(api.address, 'POST', `/v1/networks/${seg(netName)}/taps`, { vm: name, vhost: !canOpen('/dev/vhost-net') }, 30_000);
      } catch (e) {
        throw new Error(`cannot get a tap from the daemon at ${api.address}: ${(e as Error).message}`);
      }
      if (res.status !== 201 || res.fds.length === 0) {
        for (const f of res.fds) closeFd(f);
        throw new ApiError(res.status, typeof res.body === 'object' && res.body?.error ? res.body.error : `the daemon answered ${res.status} without a tap`);
      }
      tap = res.body;
      fds = res.fds;
    }
    const vhost = tap?.vhost ? 'fd' as const : canOpen('/dev/vhost-net') ? 'open' as const : undefined;
    const args = hostdev
      ? [...userArgs, '-nic', 'none', ...att.args, '-qmp', `unix:${qmp.replace(/,/g, ',,')},server=on,wait=off`]
      : [...userArgs, ...(tap
        ? qnetQemuArgs({ tapFd: 3, vhost, qmp, model: att.model, mac: att.mac })
        : qnetQemuArgs({ sock, qmp, model: att.model, mac: att.mac }))];
    // what QEMU creates once it runs: its QMP socket for a VF, its stream socket on a switch;
    // nothing to wait for on a kernel network (the tap is already there)
    const waitPath = hostdev ? qmp : tap ? undefined : sock;

    const child = spawn(program, args, { stdio: ['inherit', 'inherit', 'inherit', ...fds] });
    for (const f of fds) closeFd(f); // QEMU has its copies; the tap lives as long as QEMU
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    const forward = (sig: NodeJS.Signals): void => { if (child.exitCode === null && child.signalCode === null) child.kill(sig); };
    for (const s of SIGNALS) process.on(s, forward);
    let registered = false;
    try {
      // wait for QEMU's stream server socket, or its QMP socket for a VF (or QEMU's early exit);
      // a tap needs no waiting
      const deadline = Date.now() + SOCKET_WAIT_MS;
      let early: { code: number | null; signal: NodeJS.Signals | null } | Error | undefined;
      void exited.then((r) => { early ??= r; });
      void spawnError.then((e) => { early ??= e; });
      while (waitPath && !fs.existsSync(waitPath)) {
        if (early instanceof Error) throw new Error(`cannot run ${program}: ${early.message}`);
        if (early) {
          process.stderr.write(`qnet run: QEMU exited before it opened its network socket${early.code !== null ? ` (status ${early.code})` : ` (${early.signal})`}\n`);
          return early.code ?? 1;
        }
        if (Date.now() > deadline) {
          child.kill('SIGTERM');
          throw new Error(`QEMU did not create its ${hostdev ? 'QMP' : 'network'} socket ${waitPath} within ${SOCKET_WAIT_MS / 1000} s; stopped it`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      if (!child.pid) throw new Error(`cannot run ${program}: ${(await spawnError).message}`);
      const rec: VmRecord = { name, network: netName, mac: att.mac, model: att.model, pid: child.pid, qmp, ...(tap ? { tap: tap.tap } : hostdev ? {} : { sock }), startedAt: Date.now() };
      try {
        await api.post('/v1/vms', rec);
        registered = true;
      } catch (e) {
        child.kill('SIGTERM');
        await exited;
        throw new Error(`the daemon refused VM '${name}' (${(e as Error).message}); stopped QEMU`);
      }
      process.stderr.write(`qnet run: VM ${name} (pid ${child.pid}) on ${netName}, ${hostdev ? `VF ${hostdev.index} of ${hostdev.pf} (${hostdev.bdf}${hostdev.vlan ? `, VLAN ${hostdev.vlan}` : ''}), ` : ''}MAC ${att.mac}${tap ? `, tap ${tap.tap} on bridge ${tap.bridge}` : ''}; QMP at ${qmp}\n`);
      const { code, signal } = await exited;
      if (signal) return 128 + (signalNumber(signal) ?? 0);
      return code ?? 1;
    } finally {
      for (const s of SIGNALS) process.off(s, forward);
      if (child.exitCode === null && child.signalCode === null && child.pid) {
        child.kill('SIGTERM');
        await exited;
      }
      // a VF goes back even when QEMU never registered
      if (registered || existing || hostdev) await unregister(api, name);
      rmQuiet(sock);
      rmQuiet(qmp);
    }
  });
}

function canOpen(p: string): boolean {
  try { fs.accessSync(p, fs.constants.R_OK | fs.constants.W_OK); return true; } catch { return false; }
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15, SIGABRT: 6 } as Record<string, number>)[sig];
}
