// Reads a QEMU command line into a network model (NICs, netdevs, hubs) and
// checks it, in the order and with the verdicts QEMU 7.2 itself would reach:
// errors are what make QEMU refuse to start, warnings are what QEMU accepts
// but is likely wrong (QEMU's own start-up warnings among them).
import { tokenize, type Token, type NetOptionName } from './args.ts';
import { LEGACY_MODEL_LIST, QEMU_DEFAULT_MAC, machineInfo } from './model.ts';
import { parseBool, parseQemuOpts } from './opts.ts';
import type { Diagnostic, Hostdev, Analysis, AnalyzeOptions } from './analysis.ts';
import { USB_CONTROLLERS, optionText, diag, get, type Ctx } from './analyze-context.ts';
import { parseNetdevOption, parseNicOption, parseNetOption, parseDeviceOption } from './options.ts';
import { checkTopology } from './topology.ts';

export function analyze(argv: string[], options: AnalyzeOptions = {}): Analysis {
  const tokens = tokenize(argv);
  let machineType = options.machine;
  let nodefaults = false;
  let usb = false;
  const chardevs = new Set<string>();
  const deviceIds = new Set<string>();
  const diags: Diagnostic[] = [];
  for (const t of tokens) {
    if (t.kind === 'other' && t.name) {
      const v = t.args[1] ?? '';
      if ((t.name === 'M' || t.name === 'machine') && !options.machine) {
        const p = parseQemuOpts(v, { impliedKey: 'type' }).entries;
        machineType = get(p, 'type') ?? machineType;
        if (parseBool(get(p, 'usb') ?? 'off')) usb = true;
      } else if (t.name === 'nodefaults') nodefaults = true;
      else if (t.name === 'usb') usb = true;
      else if (t.name === 'chardev') {
        const id = get(parseQemuOpts(v, { impliedKey: 'backend' }).entries, 'id');
        if (id) chardevs.add(id);
      }
    }
    if (t.kind === 'net' && t.name === 'device') {
      const p = parseQemuOpts(t.value, { impliedKey: 'driver' }).entries;
      const drv = get(p, 'driver') ?? '';
      if (USB_CONTROLLERS.test(drv)) usb = true;
      const id = p.find((e) => e.key === 'id')?.value;
      if (id) {
        if (deviceIds.has(id)) diags.push({ severity: 'error', code: 'duplicate-id', option: optionText(t), message: `Duplicate ID '${id}' for device`, hint: 'give each -device its own id=' });
        deviceIds.add(id);
      }
    }
  }
  const machine = machineInfo(machineType);
  const ctx: Ctx = { diags, netdevs: [], nics: [], chardevs, deviceIds, machine, usb, binds: [] };
  const hostdevs: Hostdev[] = [];
  let noneNet = false;
  let sawNet = false;
  let help: string | undefined;

  for (const t of tokens) {
    if (t.kind === 'missing') {
      diag(ctx, 'error', 'missing-argument', t.written, `option '${t.written}' requires an argument`, `give it one, e.g. ${t.written} user,id=n0`);
      continue;
    }
    if (t.kind === 'other') {
      if (t.dash && !t.positional) {
        diag(ctx, 'error', 'fancy-dash', t.args.join(' '), `'${t.args[0]}' begins with '${t.dash}' (U+${t.dash.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}), not '-'; QEMU reads it as a disk image name`, `type it as -${t.args[0].slice(1)}`);
      } else if (t.positional && /^[a-z_][\w.-]*=/.test(t.args[0]) && /^(netdev|model|mac|macaddr|id|vlan|hostfwd|guestfwd|script|downscript|ifname|br|addr|vectors|net|host|dns|smb|tftp)=/.test(t.args[0])) {
        diag(ctx, 'error', 'stray-argument', t.args[0], `'${t.args[0]}' is not part of any option; QEMU reads it as a disk image name`, 'remove the space before it so it joins the previous option (e.g. "-net nic,netdev=nic0")');
      }
    }
  }

  // QEMU creates all -netdev backends first, then -nic, then -net; devices come later.
  const order: NetOptionName[] = ['netdev', 'nic', 'net'];
  const netToks = tokens.filter((t): t is Extract<Token, { kind: 'net' }> => t.kind === 'net');
  for (const t of netToks) {
    if (t.dash) {
      diag(ctx, 'error', 'fancy-dash', `${t.written} ${t.value}`, `'${t.written}' begins with '${t.dash}' (U+${t.dash.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}), not '-'; QEMU reads it and '${t.value}' as disk image names`, `type it as -${t.name}`);
    }
  }
  for (const phase of order) {
    for (const t of netToks.filter((x) => x.name === phase)) {
      if (t.name !== 'device') sawNet = true;
      const opt = optionText(t);
      if (phase === 'netdev') parseNetdevOption(ctx, t, opt);
      else if (phase === 'nic') {
        const r = parseNicOption(ctx, t, opt);
        if (r === 'none') noneNet = true;
        if (r === 'help') help = `Supported NIC models:\n${LEGACY_MODEL_LIST.join('\n')}`;
      } else {
        const r = parseNetOption(ctx, t, opt);
        if (r === 'none') noneNet = true;
        if (r === 'help') help = `Supported NIC models:\n${LEGACY_MODEL_LIST.join('\n')}`;
      }
    }
  }
  for (const t of netToks.filter((x) => x.name === 'device')) parseDeviceOption(ctx, t, optionText(t), hostdevs);
  help ??= ctx.help;

  const defaultNet = !sawNet && !nodefaults;
  if (defaultNet && hostdevs.length) {
    // -device vfio-pci is no network option to QEMU: the default NIC comes along
    diag(ctx, 'warning', 'vfio-default-net', hostdevs[0].source, `QEMU still adds its default '-nic user,model=${machine.defaultNic}' next to the assigned device: a -device is not a network option`, 'add -nic none if the host device is to be the only NIC');
  } else if (defaultNet) {
    diag(ctx, 'note', 'default-net', undefined, `no network options: QEMU adds its default '-nic user,model=${machine.defaultNic}' (user-mode NAT, MAC ${QEMU_DEFAULT_MAC})`, 'say what you want explicitly, or -nic none for no network');
  }
  if (!help) checkTopology(ctx);
  return { tokens, machine, ...(machineType ? { machineType } : {}), nodefaults, netdevs: ctx.netdevs, nics: ctx.nics, hostdevs, noneNet, defaultNet, diagnostics: diags, ...(help ? { help } : {}) };
}
