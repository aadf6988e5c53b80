// `qnet qemu lint|convert|explain|adopt -- QEMU-ARGS...`
import { shellJoin, shellSplit, stripProgram } from '../qemu/args.ts';
import { adopt } from '../qemu/adopt.ts';
import { convert } from '../qemu/convert.ts';
import { explain } from '../qemu/explain.ts';
import fs from 'node:fs';
import { formatDiagnostic, lintAnalysis } from '../qemu/lint.ts';
import { analyze } from '../qemu/analyze.ts';
import { hostdevFacts, hostdevNotes } from '../qemu/hostdev.ts';
import { Host } from '../host/pci/sysfs.ts';

const USAGE = `usage: qnet qemu <lint|convert|explain|adopt> [options] -- QEMU-ARGS...

  lint      check the network options; exit 1 if QEMU would refuse them
  convert   rewrite them as -netdev/-device pairs (--to nic: -nic shorthand
            where nothing is lost; --to libvirt: <interface>/<hostdev> XML)
  explain   describe each NIC, its MAC and PCI address, and what it reaches
  adopt     serve user-mode and socket networks with qnet instead; prints the
            qnet commands to run and the new QEMU arguments; tap and bridge
            netdevs move onto a qnet kernel network (qnet-ifup/ifdown scripts,
            qnet-bridge-helper)

options:
  --json            machine-readable output
  --machine TYPE    machine type when the line has no -M (default pc)
  --to FORMAT       convert target: netdev (default), nic, libvirt
  --socket-dir DIR  adopt: where sockets go (default \${XDG_RUNTIME_DIR:-/tmp}/qnet)
  --sysfs DIR       the host to check -device vfio-pci,host= against (default /sys,
                    when it has PCI devices): lint notes whether each device is bound
                    to vfio-pci, its IOMMU group viable and /dev/vfio/N accessible;
                    convert --to libvirt writes SR-IOV VFs as <interface type='hostdev'>
  --no-host         leave the host out (the verdict on the command line alone)
  --network NET     adopt: the qnet kernel network taps and bridges move to

QEMU-ARGS may start with the program name, or be one quoted string pasted
from a tutorial.
`;

interface Flags { json: boolean; machine?: string; to: 'netdev' | 'nic' | 'libvirt'; socketDir?: string; sysfs?: string; noHost: boolean; network?: string }

function parseFlags(args: string[]): { flags: Flags; qemu: string[]; program?: string } | string {
  const flags: Flags = { json: false, to: 'netdev', noHost: false };
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === '--') { i++; break; }
    if (a === '--json') flags.json = true;
    else if (a === '--no-host') flags.noHost = true;
    else if (a === '--machine' || a === '--to' || a === '--socket-dir' || a === '--sysfs' || a === '--network') {
      const v = args[++i];
      if (v === undefined) return `${a} needs a value`;
      if (a === '--machine') flags.machine = v;
      else if (a === '--socket-dir') flags.socketDir = v;
      else if (a === '--sysfs') flags.sysfs = v;
      else if (a === '--network') flags.network = v;
      else if (v === 'netdev' || v === 'nic' || v === 'libvirt') flags.to = v;
      else return `--to ${v}: expected netdev, nic or libvirt`;
    } else if (a.startsWith('-')) {
      // Without '--', the QEMU arguments begin at the first unknown option.
      break;
    } else break;
  }
  let qemu = args.slice(i);
  if (qemu.length === 1 && /\s/.test(qemu[0])) qemu = shellSplit(qemu[0]);
  const stripped = stripProgram(qemu);
  return { flags, qemu: stripped.args, program: stripped.program };
}

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === 'help' || sub === '--help' || sub === '-h') {
    process.stdout.write(USAGE);
    return sub ? 0 : 2;
  }
  const parsed = parseFlags(rest);
  if (typeof parsed === 'string') {
    process.stderr.write(`qnet qemu: ${parsed}\n${USAGE}`);
    return 2;
  }
  const { flags, qemu, program } = parsed;
  // a rewritten command line keeps the program it was given (qemu-system-x86_64, qemu-kvm, ...)
  const command = (args: string[]) => shellJoin(program ? [program, ...args] : args);
  const out = (s: string) => process.stdout.write(s);
  const err = (s: string) => process.stderr.write(s);
  const json = (v: unknown) => out(JSON.stringify(v, null, 2) + '\n');
  const diags = (ds: Parameters<typeof formatDiagnostic>[0][], all: boolean) => {
    for (const d of ds) if (all || d.severity === 'error') err(formatDiagnostic(d) + '\n');
  };
  const opts = flags.machine ? { machine: flags.machine } : {};
  // the host's view of vfio-pci devices: on a machine with PCI devices, or the tree given
  const host = flags.noHost ? undefined : flags.sysfs ? new Host({ sysfs: flags.sysfs }) : fs.existsSync('/sys/bus/pci/devices') ? new Host() : undefined;
  switch (sub) {
    case 'lint': {
      const a = analyze(qemu, opts);
      if (host && a.hostdevs.length) a.diagnostics.push(...hostdevNotes(a, host));
      const r = lintAnalysis(a);
      if (flags.json) json(r);
      else {
        diags(r.diagnostics, true);
        if (r.help) out(`${r.help}\n`);
        err(`${r.ok ? 'ok' : 'FAILED'}: ${r.errors} error(s), ${r.warnings} warning(s)\n`);
      }
      return r.ok ? 0 : 1;
    }
    case 'convert': {
      const hostdevs = host && flags.to === 'libvirt' ? await hostdevFacts(analyze(qemu, opts), host) : undefined;
      const r = convert(qemu, flags.to, { ...opts, ...(hostdevs ? { hostdevs } : {}) });
      if (flags.json) json({ ...r, ...(r.args ? { command: command(r.args) } : {}) });
      else if (!r.ok) { diags(r.diagnostics, false); err('convert: fix the errors above first (qnet qemu lint shows all findings)\n'); }
      else {
        out(r.xml ?? command(r.args!) + '\n');
        for (const n of r.notes) err(`note: ${n}\n`);
      }
      return r.ok ? 0 : 1;
    }
    case 'explain': {
      const r = explain(qemu, opts);
      const { analysis, ...rest2 } = r;
      if (flags.json) json({ ...rest2, diagnostics: analysis.diagnostics });
      else {
        out(r.text);
        const n = analysis.diagnostics.filter((d) => d.severity !== 'note').length;
        if (n) err(`(${n} lint finding(s); run 'qnet qemu lint' to see them)\n`);
      }
      return 0;
    }
    case 'adopt': {
      const r = adopt(qemu, { ...opts, ...(flags.socketDir ? { socketDir: flags.socketDir } : {}), ...(flags.network ? { network: flags.network } : {}) });
      if (flags.json) json({ ...r, ...(r.args ? { command: command(r.args) } : {}) });
      else if (!r.ok) { diags(r.diagnostics, false); err('adopt: fix the errors above first\n'); }
      else {
        if (r.services.length) {
          out('# start these first:\n');
          for (const s of r.services) out(`${s.command} &\n`);
          out('# then QEMU with:\n');
        }
        out(command(r.args!) + '\n');
        for (const n of r.notes) err(`note: ${n}\n`);
      }
      return r.ok ? 0 : 1;
    }
    default:
      err(`qnet qemu: unknown subcommand '${sub}'\n${USAGE}`);
      return 2;
  }
}
