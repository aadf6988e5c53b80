// Per-backend checks of -netdev/-net/-nic options (user, tap, bridge, socket, stream, dgram,
// vde, vhost-user, ...): which keys each backend takes, their values, and the combinations
// QEMU 7.2 refuses, with QEMU's own messages.
import { formatQemuOpts, inetAton, parseBool, parseCInt } from './opts.ts';
import { parseUserNetdev } from './user-options.ts';
import type { Netdev } from './analysis.ts';
import { diag, checkHostPort, bindHost, get, has, type Ctx } from './analyze-context.ts';

export function checkBackend(ctx: Ctx, opt: string, nd: Netdev): boolean {
  const e = nd.entries;
  const err = (code: string, msg: string, hint?: string) => { diag(ctx, 'error', code, opt, msg, hint); return false; };
  switch (nd.type) {
    case 'user': {
      const r = parseUserNetdev(formatQemuOpts(e.map((x) => [x.key, x.value])));
      if (!r.ok) {
        // QEMU's hostfwd parser takes IPv4 only; qnet user's takes [IPv6] too
        const v6fwd = /^hostfwd: /.test(r.error) && e.some((x) => x.key === 'hostfwd' && x.value.includes('['));
        return err('user', r.error, v6fwd ? "QEMU's hostfwd= takes IPv4 addresses only; `qnet user` accepts IPv6 in brackets there (hostfwd=tcp:[::1]:2222-:22)" : undefined);
      }
      nd.user = r.config;
      for (const w of r.config.warnings) if (!w.startsWith('short-form')) diag(ctx, 'warning', 'user', opt, w);
      for (const f of r.config.hostfwd) bindHost(ctx, opt, f.proto, f.hostAddr, f.hostPort, `hostfwd=${f.raw}`);
      if (r.config.smb !== undefined) diag(ctx, 'note', 'smb', opt, `smb=${r.config.smb} needs smbd (Samba) installed on the host; QEMU refuses to start without it`);
      for (const f of r.config.hostfwd) {
        if (f.hostAddr === '' || f.hostAddr === '0.0.0.0') {
          diag(ctx, 'note', 'hostfwd-any', opt, `hostfwd=${f.raw} listens on all host interfaces, so other machines can reach guest port ${f.guestPort}`, `bind it to loopback: ${f.proto}:127.0.0.1:${f.hostPort}-${f.guest}:${f.guestPort}`);
        }
      }
      return true;
    }
    case 'tap': {
      const given = (k: string) => has(e, k);
      if (given('fd')) {
        const bad = ['ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'fds', 'vhostfds'].filter(given);
        if (bad.length) return err('tap-fd', `ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd= (got ${bad.map((b) => b + '=').join(', ')})`, 'fd= hands QEMU an interface that is already set up: drop the other options, or drop fd= and let QEMU open the interface');
      } else if (given('fds')) {
        const bad = ['ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'vhostfd'].filter(given);
        if (bad.length) return err('tap-fd', `ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, and vhostfd= are invalid with fds= (got ${bad.map((b) => b + '=').join(', ')})`, 'drop them, or drop fds=');
        const vfds = get(e, 'vhostfds');
        if (vfds && vfds.split(':').length !== get(e, 'fds')!.split(':').length) return err('tap-fd', 'The number of fds passed does not match the number of vhostfds passed', 'give as many vhostfds as fds');
      } else if (given('helper')) {
        const bad = ['ifname', 'script', 'downscript', 'vnet_hdr', 'queues', 'fds', 'vhostfds'].filter(given);
        if (bad.length) return err('tap-helper', `ifname=, script=, downscript=, vnet_hdr=, queues=, and vhostfds= are invalid with helper= (got ${bad.map((b) => b + '=').join(', ')})`, 'the helper creates and configures the interface itself: drop those options, or drop helper=');
      } else {
        if (given('vhostfds')) return err('tap-fd', "vhostfds= is invalid if fds= wasn't specified", 'use vhostfd= with a single queue, or pass fds= too');
        if (!given('script')) diag(ctx, 'note', 'tap-script', opt, "no script= given: QEMU runs /etc/qemu-ifup with the interface name (and /etc/qemu-ifdown at exit)", "give script=no if the interface is already configured");
        if (given('br')) diag(ctx, 'warning', 'tap-br', opt, 'br= is only used together with helper=; without it the interface is not added to any bridge', 'use -netdev bridge,br=BRIDGE, or add helper=');
      }
      const vhost = get(e, 'vhost');
      if (vhost !== undefined && parseBool(vhost) === false && (given('vhostfd') || given('vhostfds'))) {
        return err('tap-vhost', 'vhostfd=/vhostfds= is not valid without vhost', 'set vhost=on or drop vhostfd=');
      }
      if (given('vhostforce')) diag(ctx, 'warning', 'deprecated', opt, 'vhostforce= is deprecated', 'drop it; vhost=on is enough');
      return true;
    }
    case 'socket': {
      const modes = ['fd', 'listen', 'connect', 'mcast', 'udp'].filter((k) => has(e, k));
      if (modes.length !== 1) {
        return err('socket-mode', `exactly one of listen=, connect=, mcast= or udp= is required${modes.length ? ` (got ${modes.map((m) => m + '=').join(' and ')})` : ''}`,
          'listen=:PORT on one VM and connect=127.0.0.1:PORT on the other, or mcast=230.0.0.1:PORT on all of them');
      }
      const mode = modes[0];
      if (has(e, 'localaddr') && mode !== 'mcast' && mode !== 'udp') return err('socket-localaddr', 'localaddr= is only valid with mcast= or udp=', 'drop localaddr=');
      if (mode === 'udp' && !has(e, 'localaddr')) return err('socket-localaddr', 'localaddr= is mandatory with udp=', 'add localaddr=HOST:PORT for the local end');
      let ok = true;
      if (mode !== 'fd') {
        const hp = checkHostPort(ctx, opt, mode, get(e, mode)!);
        if (!hp) ok = false;
        else if (mode === 'mcast') {
          const a = inetAton(hp.host);
          if (a === undefined || a >>> 28 !== 0xe) {
            return err('socket-mcast', `specified mcastaddr ${hp.host} does not contain a multicast address`, 'use a group in 224.0.0.0/4, e.g. mcast=230.0.0.1:1234');
          }
        } else if (mode === 'listen') bindHost(ctx, opt, 'tcp', hp.host, hp.port, `listen=${get(e, mode)}`);
        if (hp && mode === 'listen' && (hp.host === '' || hp.host === '0.0.0.0')) {
          diag(ctx, 'note', 'listen-any', opt, `listen=${get(e, mode)} accepts connections on all host interfaces`, 'bind to 127.0.0.1 when the peers run on this host');
        }
      }
      if (mode === 'udp' && ok) {
        const la = checkHostPort(ctx, opt, 'localaddr', get(e, 'localaddr')!);
        if (!la) ok = false;
        else bindHost(ctx, opt, 'udp', la.host, la.port, `localaddr=${get(e, 'localaddr')}`);
      }
      if (mode === 'mcast' && has(e, 'localaddr')) {
        const la = get(e, 'localaddr')!;
        if (inetAton(la) === undefined) return err('bad-address', `localaddr: can't parse '${la}' as an IPv4 address`, 'with mcast=, localaddr= is the address of the interface to send from, without a port');
      }
      return ok;
    }
    case 'stream':
    case 'dgram':
      return checkSocketAddressBackend(ctx, opt, nd);
    case 'hubport': {
      const hubid = parseCInt(get(e, 'hubid') ?? '');
      if (!has(e, 'hubid')) return err('missing-option', "Parameter 'hubid' is missing", 'add hubid=N');
      nd.hubid = hubid;
      const link = get(e, 'netdev');
      if (link !== undefined) {
        const peer = ctx.netdevs.find((n) => n.id === link);
        if (!peer) return err('missing-netdev', `netdev '${link}' not found`, `define -netdev ...,id=${link} before this hubport`);
        // QEMU aborts (assertion !peer->peer) when a netdev gets a second peer this way.
        if (ctx.netdevs.some((n) => n.link === link) || peer.type === 'hubport') return err('netdev-in-use', `netdev '${link}' already has a peer; QEMU would abort`, 'wire each backend to exactly one hubport');
        nd.link = link;
      }
      return true;
    }
    case 'vhost-user': {
      const c = get(e, 'chardev');
      if (c === undefined) return err('missing-option', "Parameter 'chardev' is missing", 'add chardev=ID of a -chardev socket,id=ID,path=...');
      if (!ctx.chardevs.has(c)) return err('missing-chardev', `chardev "${c}" not found`, `add -chardev socket,id=${c},path=/path/to/vhost-user.sock`);
      return true;
    }
    case 'vhost-vdpa':
      if (!has(e, 'vhostdev') && !has(e, 'vhostfd')) return err('missing-option', 'vhost-vdpa needs vhostdev= or vhostfd=', 'add vhostdev=/dev/vhost-vdpa-0');
      if (has(e, 'vhostdev') && has(e, 'vhostfd')) return err('vdpa', 'vhostdev= and vhostfd= are mutually exclusive', 'give only one of them');
      return true;
    case 'l2tpv3':
      for (const k of ['src', 'dst', 'txsession']) if (!has(e, k)) return err('missing-option', `Parameter '${k}' is missing`, `l2tpv3 needs src=, dst= and txsession=`);
      if (parseBool(get(e, 'udp') ?? 'off') && (!has(e, 'srcport') || !has(e, 'dstport'))) return err('missing-option', 'l2tpv3 with udp=on needs srcport= and dstport=');
      return true;
    default:
      return true;
  }
}

export const SOCKADDR_KEYS: Record<string, string[]> = {
  inet: ['host', 'port', 'numeric', 'to', 'ipv4', 'ipv6', 'keep-alive', 'mptcp'],
  unix: ['path', 'abstract', 'tight'],
  fd: ['str'],
};

/** stream/dgram take nested socket addresses (addr.*, local.*, remote.*), read by keyval. */
export function checkSocketAddressBackend(ctx: Ctx, opt: string, nd: Netdev): boolean {
  const groups = nd.type === 'stream' ? ['addr'] : ['local', 'remote'];
  const top = nd.type === 'stream' ? ['server'] : [];
  const addrs: Record<string, Record<string, string>> = {};
  for (const e of nd.entries) {
    const dot = e.key.indexOf('.');
    const g = dot < 0 ? e.key : e.key.slice(0, dot);
    if (dot < 0 && top.includes(e.key)) {
      if (parseBool(e.value) === undefined) { diag(ctx, 'error', 'bad-value', opt, `Parameter '${e.key}' expects 'on' or 'off'`); return false; }
      continue;
    }
    if (!groups.includes(g) || dot < 0) {
      diag(ctx, 'error', 'unknown-option', opt, `Parameter '${e.key}' is unexpected`,
        nd.type === 'stream' ? 'stream takes server=on|off and addr.type=inet,addr.host=H,addr.port=P or addr.type=unix,addr.path=PATH' : 'dgram takes local.* and remote.* addresses (type=inet with host/port, type=unix with path)');
      return false;
    }
    (addrs[g] ??= {})[e.key.slice(dot + 1)] = e.value;
  }
  const checkAddr = (g: string): boolean => {
    const a = addrs[g];
    const t = a.type;
    if (t === undefined) { diag(ctx, 'error', 'missing-option', opt, `Parameter '${g}.type' is missing`, `add ${g}.type=inet or ${g}.type=unix`); return false; }
    const keys = SOCKADDR_KEYS[t];
    if (!keys) { diag(ctx, 'error', 'bad-value', opt, `Parameter '${g}.type' does not accept value '${t}'`, 'use inet, unix or fd'); return false; }
    for (const k of Object.keys(a)) {
      if (k !== 'type' && !keys.includes(k)) { diag(ctx, 'error', 'unknown-option', opt, `Parameter '${g}.${k}' is unexpected`, `${g}.type=${t} takes ${keys.map((x) => `${g}.${x}`).join(', ')}`); return false; }
    }
    const need = t === 'inet' ? ['host', 'port'] : t === 'unix' ? ['path'] : ['str'];
    for (const k of need) if (a[k] === undefined) { diag(ctx, 'error', 'missing-option', opt, `Parameter '${g}.${k}' is missing`); return false; }
    if (t === 'inet' && nd.type === 'dgram' && !/^\d+$/.test(a.port)) {
      diag(ctx, 'error', 'bad-port', opt, `${g}.port: port number '${a.port}' is invalid`, 'use a numeric UDP port');
      return false;
    }
    if (t === 'inet') {
      const p = parseCInt(a.port);
      if (p !== undefined && (p < 0 || p > 65535)) { diag(ctx, 'error', 'bad-port', opt, `${g}.port: port ${a.port} is outside 0..65535`); return false; }
      if (p === undefined && !/^[a-z][a-z0-9-]*$/i.test(a.port)) { diag(ctx, 'error', 'bad-port', opt, `${g}.port: '${a.port}' is neither a port number nor a service name`); return false; }
    }
    return true;
  };
  if (nd.type === 'stream') {
    if (!addrs.addr) { diag(ctx, 'error', 'missing-option', opt, "Parameter 'addr' is missing", 'add addr.type=inet,addr.host=127.0.0.1,addr.port=PORT or addr.type=unix,addr.path=PATH'); return false; }
    if (!checkAddr('addr')) return false;
    const server = parseBool(get(nd.entries, 'server') ?? 'off');
    if (server && addrs.addr.type === 'inet') bindHost(ctx, opt, 'tcp', addrs.addr.host, parseCInt(addrs.addr.port) ?? -1, `addr.port=${addrs.addr.port}`);
    if (server && addrs.addr.type === 'inet' && (addrs.addr.host === '' || addrs.addr.host === '0.0.0.0')) {
      diag(ctx, 'note', 'listen-any', opt, 'the stream server accepts connections on all host interfaces', 'set addr.host=127.0.0.1 when the peers run on this host');
    }
    return true;
  }
  // A multicast remote makes local= optional (QEMU joins the group itself).
  if (!addrs.local && addrs.remote?.type === 'inet' && ((inetAton(addrs.remote.host ?? '') ?? 0) >>> 28) === 0xe) return checkAddr('remote');
  if (!addrs.local) { diag(ctx, 'error', 'missing-option', opt, 'dgram requires local= parameter', 'add local.type=inet,local.host=127.0.0.1,local.port=PORT (or local.type=unix,local.path=PATH)'); return false; }
  if (!checkAddr('local')) return false;
  if (addrs.local.type === 'fd') {
    if (addrs.remote) { diag(ctx, 'error', 'dgram', opt, 'type=fd requires local parameter only', 'drop remote.*'); return false; }
    return true;
  }
  if (!addrs.remote) { diag(ctx, 'error', 'missing-option', opt, 'type=inet or type=unix requires remote parameter', `add remote.type=${addrs.local.type} with the peer's address`); return false; }
  if (!checkAddr('remote')) return false;
  if (addrs.local.type === 'inet') bindHost(ctx, opt, 'udp', addrs.local.host, parseCInt(addrs.local.port) ?? -1, `local.port=${addrs.local.port}`);
  if (addrs.remote.type !== addrs.local.type) { diag(ctx, 'error', 'dgram', opt, `remote and local types must be the same (local.type=${addrs.local.type}, remote.type=${addrs.remote.type})`, 'use the same type for both ends'); return false; }
  return true;
}
