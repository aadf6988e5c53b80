// The four network options of a QEMU command line, each read as QEMU 7.2 reads it:
// -netdev (a backend), -nic (a NIC and its backend in one), -net (the legacy hub form) and
// -device (a NIC model, or a host device such as vfio-pci).
import type { Token } from './args.ts';
import { BACKENDS, LEGACY_MODEL_LIST, LEGACY_NIC_OPTIONS, NIC_MODELS, deviceProperties, findNicModel, legacyModelName } from './model.ts';
import { parseCInt, parseQemuOpts } from './opts.ts';
import { macToString, parseQemuMac } from '../wire/addr.ts';
import type { Netdev, Hostdev } from './analysis.ts';
import { ID_RE, parsePciAddr, diag, checkEntries, get, has, checkId, splitTypeId, unknownBackend, nextId, type Ctx } from './analyze-context.ts';
import { checkBackend } from './backends.ts';

export function addNetdev(ctx: Ctx, opt: string, nd: Netdev): boolean {
  if (ctx.netdevs.some((n) => n.id === nd.id)) {
    diag(ctx, 'error', 'duplicate-id', opt, `Duplicate ID '${nd.id}' for netdev`, 'give each -netdev its own id=');
    return false;
  }
  ctx.netdevs.push(nd);
  return true;
}

export function parseNetdevOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string): void {
  // stream and dgram are read with keyval, the others with QemuOpts.
  const first = parseQemuOpts(t.value, { impliedKey: 'type' });
  const type0 = get(first.entries, 'type');
  const keyval = type0 === 'stream' || type0 === 'dgram';
  const parsed = keyval && !first.json ? parseQemuOpts(t.value, { impliedKey: 'type', keyval: true }) : first;
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type, id, rest } = splitTypeId(parsed.entries, 'type');
  if (type === 'help' || type === '?') { ctx.help = `Available netdev backend types:\n${Object.keys(BACKENDS).join('\n')}`; return; }
  const spec = type !== undefined ? BACKENDS[type] : undefined;
  if (!spec) {
    if (type === 'nic') diag(ctx, 'error', 'unknown-backend', opt, "Parameter 'type' does not accept value 'nic'", "NICs are devices: use -device MODEL,netdev=ID (or -net nic with -net backends)");
    else unknownBackend(ctx, opt, type, '-netdev', Object.keys(BACKENDS));
    return;
  }
  if (!checkId(ctx, opt, id, true, 'netdev')) return;
  if (!spec.keyval && !checkEntries(ctx, opt, spec, rest, `-netdev ${type}`)) return;
  const nd: Netdev = { id: id!, type: type!, entries: rest, origin: '-netdev', source: opt, raw: t.value, pos: t.index, ...(parsed.json ? { json: true } : {}) };
  if (!checkBackend(ctx, opt, nd)) return;
  addNetdev(ctx, opt, nd);
}

export function checkMacFor(ctx: Ctx, opt: string, key: string, v: string, loose: boolean, strictMulticast: boolean, devName?: string): string | undefined {
  const b = parseQemuMac(v, loose);
  if (!b) {
    if (devName) diag(ctx, 'error', 'bad-mac', opt, `Property '${devName}.mac' doesn't take value '${v}'`, 'write six two-digit hex bytes, e.g. mac=52:54:00:ab:cd:01');
    else diag(ctx, 'error', 'bad-mac', opt, `${key}: invalid syntax for ethernet address '${v}'`, `write six hex bytes separated by ':', e.g. ${key}=52:54:00:ab:cd:01`);
    return undefined;
  }
  if (b[0] & 1) {
    if (strictMulticast) diag(ctx, 'error', 'multicast-mac', opt, `NIC cannot have multicast MAC address (odd 1st byte): ${v}`, 'clear the lowest bit of the first byte; 52:54:00:xx:xx:xx is the usual QEMU range');
    else diag(ctx, 'warning', 'multicast-mac', opt, `MAC ${v} is a multicast address (odd 1st byte); QEMU accepts it on -device but the guest's traffic will be misdelivered`, 'clear the lowest bit of the first byte, e.g. 52:54:00:xx:xx:xx');
  }
  return macToString(b, 0);
}

export function parseNicOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string): 'none' | 'help' | void {
  const parsed = parseQemuOpts(t.value, { impliedKey: 'type' });
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type, id, rest } = splitTypeId(parsed.entries, 'type');
  if (type === 'none') return 'none';
  const model = get(rest, 'model');
  if (model === 'help' || model === '?') return 'help';
  const spec = type !== undefined ? BACKENDS[type] : undefined;
  const nicable = Object.values(BACKENDS).filter((b) => b.nic && !b.keyval).map((b) => b.name);
  if (!spec || spec.keyval) {
    if (spec?.keyval) diag(ctx, 'error', 'unknown-backend', opt, `-nic can't take the ${type} backend (its addr.* options need -netdev)`, `use -netdev ${type},id=ID,... with -device MODEL,netdev=ID`);
    else unknownBackend(ctx, opt, type, '-nic', [...nicable, 'none']);
    return;
  }
  if (!checkId(ctx, opt, id, false, 'netdev')) return;
  const backendEntries = rest.filter((e) => e.key !== 'model' && e.key !== 'mac');
  if (!checkEntries(ctx, opt, { name: spec.name, options: [...spec.options, { name: 'model', type: 'str', desc: '' }, { name: 'mac', type: 'str', desc: '' }] }, rest, `-nic ${type} (plus model= and mac=)`)) return;
  let mac: string | undefined;
  const macv = get(rest, 'mac');
  if (macv !== undefined) { mac = checkMacFor(ctx, opt, 'mac', macv, true, true); if (!mac) return; }
  const m = checkLegacyModel(ctx, opt, model);
  if (m === undefined) return;
  if (!legacyNicRoom(ctx, opt)) return;
  const ndId = id ?? nextId(ctx, '__org.qemu.nic');
  const nd: Netdev = { id: ndId, type: type!, entries: backendEntries, origin: '-nic', source: opt, pos: t.index, ...(id ? {} : { autoId: true }) };
  if (!checkBackend(ctx, opt, nd)) return;
  if (!addNetdev(ctx, opt, nd)) return;
  ctx.nics.push({ name: `${m}.${ctx.nics.filter((n) => n.model === m).length}`, model: m, ...(model && model !== m ? { writtenModel: model } : {}), ...(mac ? { mac } : {}), props: [], netdev: ndId, origin: '-nic', source: opt, pos: t.index });
}

/** QEMU keeps -nic and -net nic NICs in a fixed table (MAX_NICS). */
export const MAX_LEGACY_NICS = 8;

export function legacyNicRoom(ctx: Ctx, opt: string): boolean {
  if (ctx.nics.filter((n) => n.origin !== '-device').length < MAX_LEGACY_NICS) return true;
  diag(ctx, 'error', 'too-many-nics', opt, `no more on-board/default NIC slots available: -nic and -net nic can create at most ${MAX_LEGACY_NICS} NICs`, 'add the others with -netdev TYPE,id=ID plus -device MODEL,netdev=ID');
  return false;
}

export function checkLegacyModel(ctx: Ctx, opt: string, model: string | undefined): string | undefined {
  if (model === undefined) return ctx.machine.defaultNic;
  const m = legacyModelName(model);
  if (!m) {
    const dev = findNicModel(model);
    const hint = dev && !dev.legacyModel
      ? `${model} can only be added with -device`
      : `valid models: ${LEGACY_MODEL_LIST.join(', ')}`;
    diag(ctx, 'error', 'unknown-model', opt, `Unsupported NIC model: ${model}`, hint);
    return undefined;
  }
  return m;
}

export function parseNetOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string): 'none' | 'help' | void {
  const parsed = parseQemuOpts(t.value, { impliedKey: 'type' });
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type, id, rest } = splitTypeId(parsed.entries, 'type');
  if (type === 'none') return 'none';
  // vlan= is gone from QEMU, but we still read it so convert can map vlans to hubs.
  const vlanStr = get(rest, 'vlan');
  const vlan = vlanStr !== undefined ? parseCInt(vlanStr) : undefined;
  const hub = vlan ?? 0;
  if (type === 'nic') {
    const model = get(rest, 'model');
    if (model === 'help' || model === '?') return 'help';
    if (!checkEntries(ctx, opt, { name: 'nic', options: LEGACY_NIC_OPTIONS }, rest, '-net nic')) {
      if (!rest.some((e) => e.key === 'vlan') || rest.some((e) => !['vlan', ...LEGACY_NIC_OPTIONS.map((x) => x.name)].includes(e.key))) return;
    }
    if (!checkId(ctx, opt, id, false, 'nic')) return;
    let mac: string | undefined;
    const macv = get(rest, 'macaddr');
    if (macv !== undefined) { mac = checkMacFor(ctx, opt, 'macaddr', macv, true, true); if (!mac) return; }
    const m = checkLegacyModel(ctx, opt, model);
    if (m === undefined) return;
    const addr = get(rest, 'addr');
    if (addr !== undefined) {
      // -net nic reads addr= with pci_parse_devaddr: [[domain:]bus:]slot in hex, no function.
      const a = /^(?:(?:[0-9a-fA-F]{1,4}:)?[0-9a-fA-F]{1,2}:)?(?:0[xX])?[0-9a-fA-F]{1,2}$/.test(addr) ? parsePciAddr(addr.replace(/^.*:/, '')) : undefined;
      if (!a) {
        diag(ctx, 'error', 'bad-pci-addr', opt, `Invalid PCI device address ${addr} for device ${m}`, 'write the slot in hex, e.g. addr=08 (-net nic takes no function number; use -device for that)');
        return;
      }
    }
    const vectors = get(rest, 'vectors');
    const netdev = get(rest, 'netdev');
    if (netdev !== undefined) {
      const nd = ctx.netdevs.find((n) => n.id === netdev && n.origin === '-netdev');
      if (!nd) { diag(ctx, 'error', 'missing-netdev', opt, `netdev '${netdev}' not found`, `define it with -netdev TYPE,id=${netdev},...`); return; }
      if (ctx.nics.some((n) => n.netdev === netdev) || ctx.netdevs.some((n) => n.link === netdev) || nd.link !== undefined) {
        diag(ctx, 'error', 'netdev-in-use', opt, `netdev '${netdev}' is already in use`, 'each netdev has exactly one peer');
        return;
      }
    }
    if (!legacyNicRoom(ctx, opt)) return;
    const model0 = findNicModel(m)!;
    if (vectors !== undefined && !model0.virtio) {
      diag(ctx, 'warning', 'vectors-ignored', opt, `vectors=${vectors} only applies to virtio NICs; ${m} ignores it`, 'drop vectors= or use model=virtio-net-pci');
    }
    ctx.nics.push({
      name: id ?? `${m}.${ctx.nics.filter((n) => n.model === m).length}`,
      ...(id ? { id } : {}),
      model: m, ...(model && model !== m ? { writtenModel: model } : {}),
      ...(mac ? { mac } : {}), ...(addr !== undefined ? { addr } : {}), ...(vectors !== undefined ? { vectors } : {}),
      props: [], ...(netdev !== undefined ? { netdev } : { hub }), origin: '-net', source: opt, pos: t.index,
    });
    return;
  }
  const spec = type !== undefined ? BACKENDS[type] : undefined;
  const legacy = Object.values(BACKENDS).filter((b) => b.legacy).map((b) => b.name);
  if (!spec || !spec.legacy) {
    if (spec) diag(ctx, 'error', 'legacy-backend', opt, `network backend '${type}' is only supported with -netdev${spec.keyval ? '' : '/-nic'}`, `use -netdev ${type},id=ID,... with -device MODEL,netdev=ID`);
    else unknownBackend(ctx, opt, type, '-net', ['nic', ...legacy, 'none']);
    return;
  }
  const backendEntries = rest.filter((e) => e.key !== 'vlan');
  const vlanOk = checkEntries(ctx, opt, spec, rest, `-net ${type}`);
  if (!vlanOk && backendEntries.length !== rest.length) {
    // Only vlan= was wrong: keep the backend so explain/convert can still work with it.
    if (!checkEntries({ ...ctx, diags: [] }, opt, spec, backendEntries, '')) return;
  } else if (!vlanOk) return;
  if (!checkId(ctx, opt, id, false, 'netdev')) return;
  const nd: Netdev = { id: id ?? nextId(ctx, `${type}.`), type: type!, entries: backendEntries, origin: '-net', source: opt, hub, pos: t.index, ...(id ? {} : { autoId: true }) };
  if (!checkBackend(ctx, opt, nd)) return;
  addNetdev(ctx, opt, nd);
}

export function parseDeviceOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string, hostdevs: Hostdev[]): void {
  const parsed = parseQemuOpts(t.value, { impliedKey: 'driver' });
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type: driver, id, rest } = splitTypeId(parsed.entries, 'driver');
  if (driver === 'vfio-pci') {
    hostdevs.push({ driver, host: get(rest, 'host'), sysfsdev: get(rest, 'sysfsdev'), ...(id ? { id } : {}), addr: get(rest, 'addr'), props: rest, source: opt });
    if (!has(rest, 'host') && !has(rest, 'sysfsdev')) diag(ctx, 'error', 'vfio', opt, 'vfio-pci needs host= or sysfsdev=', 'add host=BUS:SLOT.FN of the host device, e.g. host=03:00.3');
    else if (has(rest, 'host') && !/^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/.test(get(rest, 'host')!)) {
      diag(ctx, 'error', 'vfio', opt, `host=${get(rest, 'host')} is not a PCI address`, 'write [DOMAIN:]BUS:SLOT.FN, e.g. host=0000:03:00.3 (see lspci -D)');
    } else diag(ctx, 'note', 'vfio', opt, 'vfio-pci hands a host PCI device to the guest: it must be bound to vfio-pci on the host and needs an IOMMU');
    return;
  }
  const model = driver !== undefined ? findNicModel(driver) : undefined;
  if (!model) {
    if (driver && /net|nic|e1000|rtl|virtio-net/i.test(driver) && !/(^|-)(blk|scsi|serial|balloon|rng|gpu|vga|9p|fs)/.test(driver)) {
      const near = NIC_MODELS.filter((m) => m.name.includes(driver.replace(/-.*$/, '')) || driver.includes(m.name)).map((m) => m.name);
      diag(ctx, 'error', 'unknown-model', opt, `'${driver}' is not a valid device model name`, `NIC models: ${(near.length ? near : NIC_MODELS.map((m) => m.name)).join(', ')}`);
    }
    return; // not a network device
  }
  if (id !== undefined && !ID_RE.test(id)) { diag(ctx, 'error', 'bad-id', opt, "Parameter 'id' expects an identifier", "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."); return; }
  const props = deviceProperties(model.name);
  for (const e of rest) {
    if (e.key === 'bus') continue;
    if (!props.includes(e.key)) {
      diag(ctx, 'error', 'unknown-option', opt, `Property '${driver}.${e.key}' not found`, `${driver} properties include: ${props.filter((p) => !p.startsWith('x-')).slice(0, 24).join(', ')}${props.length > 24 ? ', ...' : ''}`);
      return;
    }
  }
  let mac: string | undefined;
  const macv = get(rest, 'mac');
  if (macv !== undefined) { mac = checkMacFor(ctx, opt, 'mac', macv, false, false, driver); if (!mac) return; }
  const vectors = get(rest, 'vectors');
  if (vectors !== undefined && parseCInt(vectors) === undefined) { diag(ctx, 'error', 'bad-value', opt, "Parameter 'vectors' expects integer"); return; }
  const addr = get(rest, 'addr');
  if (addr !== undefined && !parsePciAddr(addr)) {
    diag(ctx, 'error', 'bad-pci-addr', opt, `Property '${driver}.addr' doesn't take value '${addr}'`, 'write slot[.function] in hex with slot 00..1f and function 0..7, e.g. addr=0x8 or addr=08.0');
    return;
  }
  const bus = get(rest, 'bus');
  if (model.bus === 'usb-bus' && !ctx.usb && bus === undefined) {
    diag(ctx, 'error', 'no-bus', opt, `No 'usb-bus' bus found for device '${driver}'`, 'add a USB controller first, e.g. -device qemu-xhci');
    return;
  }
  if (model.bus === 'virtio-bus' && ctx.machine.family !== 'microvm' && bus === undefined) {
    diag(ctx, 'error', 'no-bus', opt, `No 'virtio-bus' bus found for device '${driver}'`, 'on pc/q35 use virtio-net-pci');
    return;
  }
  if (bus !== undefined && model.bus === 'PCI' && bus !== ctx.machine.pciBus && !ctx.deviceIds.has(bus)) {
    diag(ctx, 'error', 'no-bus', opt, `Bus '${bus}' not found`, `this machine's root PCI bus is '${ctx.machine.pciBus}'; other buses come from -device ...,id=NAME bridges or root ports`);
    return;
  }
  const netdev = get(rest, 'netdev');
  if (netdev !== undefined && !model.netdev) { diag(ctx, 'error', 'unknown-option', opt, `Property '${driver}.netdev' not found`); return; }
  if (netdev !== undefined) {
    const nd = ctx.netdevs.find((n) => n.id === netdev);
    if (!nd) {
      diag(ctx, 'error', 'missing-netdev', opt, `Property '${driver}.netdev' can't find value '${netdev}'`,
        ctx.netdevs.length ? `define -netdev TYPE,id=${netdev},... or use one of: ${ctx.netdevs.filter((n) => !n.autoId).map((n) => n.id).join(', ') || '(none)'}` : `define it with -netdev TYPE,id=${netdev},...`);
      return;
    }
    if (ctx.nics.some((n) => n.netdev === netdev) || ctx.netdevs.some((n) => n.link === netdev) || nd.link !== undefined || nd.origin === '-net') {
      diag(ctx, 'error', 'netdev-in-use', opt, `Property '${driver}.netdev' can't take value '${netdev}', it's in use`, 'each netdev has exactly one peer: give this device its own -netdev, or join them with hubport netdevs');
      return;
    }
    if (nd.type === 'vhost-user' && !model.virtio) {
      diag(ctx, 'error', 'vhost-user-model', opt, `vhost-user requires frontend driver virtio-net-*, not ${driver}`, 'use -device virtio-net-pci');
      return;
    }
  }
  const others = rest.filter((e) => !['mac', 'addr', 'bus', 'netdev', 'vectors'].includes(e.key));
  ctx.nics.push({
    name: id ?? `${model.name}.${ctx.nics.filter((n) => n.model === model.name).length}`,
    ...(id ? { id } : {}), model: model.name, ...(driver !== model.name ? { writtenModel: driver } : {}),
    ...(mac ? { mac } : {}), ...(addr !== undefined ? { addr } : {}), ...(bus !== undefined ? { bus } : {}),
    ...(vectors !== undefined ? { vectors } : {}), props: others, ...(netdev !== undefined ? { netdev } : {}),
    origin: '-device', source: opt, raw: t.value, pos: t.index, ...(parsed.json ? { json: true } : {}),
  });
}

/** Where a NIC's traffic ends up: the backends it reaches directly or through a hub. */
