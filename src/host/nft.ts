// The nftables ruleset of a kernel network: one private table per network, `ip qnet-NETWORK`,
// with the rules libvirt's nftables backend uses for the same modes (network_nftables.c), plus
// port forwards (DNAT) the way Incus publishes them.
//
//   forward (filter, hook forward)   jumps, in this order, to
//     guest_cross    iif BR oif BR accept                 (guests talk to each other)
//     guest_input    nat:    oif BR daddr SUBNET ct state related,established accept,
//                            oif BR daddr GUEST dport P ct status dnat accept (each forward)
//                    routed: oif BR daddr SUBNET accept
//                    then    oif BR reject                (nothing else into the bridge)
//     guest_output   nat/routed: iif BR saddr SUBNET accept; then iif BR reject
//   guest_nat (nat, postrouting)     saddr SUBNET daddr 224.0.0.0/24 return,
//                    saddr SUBNET daddr 255.255.255.255 return,
//                    tcp/udp saddr SUBNET daddr != SUBNET masquerade to :1024-65535,
//                    saddr SUBNET daddr != SUBNET masquerade,
//                    oif BR saddr SUBNET daddr GUEST dport P ct status dnat masquerade
//                    (hairpin: a guest reaching a forward by the host's address gets the
//                    answer back through the host, not straight from the other guest)
//   prerouting (nat, dstnat)         [daddr HOSTADDR | fib daddr type local] dport HP dnat to GUEST:P
//   output (nat, dstnat)             the same for connections from the host itself
//                                    (loopback excluded: 127/8 cannot be routed to a bridge)
//
//   isolated: guest_cross accept, guest_input/guest_output reject only; no NAT.
//   open and bridge modes: no table at all.
//
// Applying is one `nft -f` transaction: `table ip T` (create if missing), `delete table ip T`,
// then the whole table. So a start after a crash replaces stale rules instead of adding a
// second copy, and no packet ever sees half a ruleset. Removing is `delete table`. Rules in
// *other* tables still apply (a drop anywhere wins over our accept): `qnet doctor` reports
// such drops (foreignDrops below). Interfaces are matched by name (iifname/oifname), so the
// table stays right if the bridge is re-created.
import { must, mustJson, type Runner } from './run.ts';

export type KernelMode = 'nat' | 'isolated' | 'routed' | 'open' | 'bridge';

export interface NftForward {
  proto: 'tcp' | 'udp';
  /** '' or '0.0.0.0': every local address of the host; else one IPv4 address */
  hostAddr: string;
  hostPort: number;
  guestIp: string;
  guestPort: number;
}

export interface RulesetSpec {
  network: string;
  bridge: string;
  /** the guests' subnet, CIDR */
  subnet: string;
  mode: KernelMode;
  forwards?: NftForward[];
}

export const TABLE_PREFIX = 'qnet-';
export function tableName(network: string): string { return `${TABLE_PREFIX}${network}`; }

const q = (s: string): string => `"${s.replace(/["\\]/g, '')}"`;

/** Does a mode need a table at all? */
export function modeHasRules(mode: KernelMode): boolean { return mode === 'nat' || mode === 'isolated' || mode === 'routed'; }

/** The table's text (nft syntax), or null for modes without rules. */
export function buildTable(spec: RulesetSpec): string | null {
  if (!modeHasRules(spec.mode)) return null;
  const br = q(spec.bridge);
  const net = spec.subnet;
  const fwds = spec.mode === 'nat' ? spec.forwards ?? [] : [];
  const L: string[] = [];
  const chain = (name: string, head: string | null, rules: string[]) => {
    L.push(`\tchain ${name} {`);
    if (head) L.push(`\t\t${head}`);
    for (const r of rules) L.push(`\t\t${r}`);
    L.push('\t}');
  };
  L.push(`table ip ${tableName(spec.network)} {`);
  L.push(`\tcomment ${q(`qnet network ${spec.network} (${spec.mode} on bridge ${spec.bridge}); managed by qnet, replaced at start, removed at stop`)}`);
  chain('forward', 'type filter hook forward priority filter; policy accept;', ['counter jump guest_cross', 'counter jump guest_input', 'counter jump guest_output']);
  chain('guest_cross', null, [`iifname ${br} oifname ${br} counter accept`]);
  const input: string[] = [];
  const output: string[] = [];
  if (spec.mode === 'nat') {
    input.push(`oifname ${br} ip daddr ${net} ct state related,established counter accept`);
    for (const f of fwds) input.push(`oifname ${br} ip daddr ${f.guestIp} ${f.proto} dport ${f.guestPort} ct status dnat counter accept`);
    output.push(`iifname ${br} ip saddr ${net} counter accept`);
  } else if (spec.mode === 'routed') {
    input.push(`oifname ${br} ip daddr ${net} counter accept`);
    output.push(`iifname ${br} ip saddr ${net} counter accept`);
  }
  input.push(`oifname ${br} counter reject`);
  output.push(`iifname ${br} counter reject`);
  chain('guest_input', null, input);
  chain('guest_output', null, output);
  if (spec.mode === 'nat') {
    const nat = [
      `ip saddr ${net} ip daddr 224.0.0.0/24 counter return`,
      `ip saddr ${net} ip daddr 255.255.255.255 counter return`,
      `meta l4proto tcp ip saddr ${net} ip daddr != ${net} counter masquerade to :1024-65535`,
      `meta l4proto udp ip saddr ${net} ip daddr != ${net} counter masquerade to :1024-65535`,
      `ip saddr ${net} ip daddr != ${net} counter masquerade`,
      ...fwds.map((f) => `oifname ${br} ip saddr ${net} ip daddr ${f.guestIp} ${f.proto} dport ${f.guestPort} ct status dnat counter masquerade`),
    ];
    chain('guest_nat', 'type nat hook postrouting priority srcnat; policy accept;', nat);
    if (fwds.length) {
      const match = (f: NftForward) => (f.hostAddr && f.hostAddr !== '0.0.0.0' ? `ip daddr ${f.hostAddr}` : 'fib daddr type local');
      chain('prerouting', 'type nat hook prerouting priority dstnat; policy accept;',
        fwds.map((f) => `${match(f)} ${f.proto} dport ${f.hostPort} counter dnat to ${f.guestIp}:${f.guestPort}`));
      chain('output', 'type nat hook output priority -100; policy accept;',
        fwds.filter((f) => !f.hostAddr.startsWith('127.')).map((f) => `ip daddr != 127.0.0.0/8 ${match(f)} ${f.proto} dport ${f.hostPort} counter dnat to ${f.guestIp}:${f.guestPort}`));
    }
  }
  L.push('}');
  return L.join('\n') + '\n';
}

/** The atomic replace transaction for `nft -f -`, or just the delete for modes without rules. */
export function applyScript(spec: RulesetSpec): string {
  const t = tableName(spec.network);
  const body = buildTable(spec);
  return `table ip ${t}\ndelete table ip ${t}\n${body ?? ''}`;
}

/** Apply (or replace) the network's table in one transaction. */
export async function applyRuleset(r: Runner, spec: RulesetSpec): Promise<void> {
  await must(r, ['nft', '-f', '-'], applyScript(spec));
}

/** Remove the network's table; false when there was none. */
export async function removeRuleset(r: Runner, network: string): Promise<boolean> {
  const res = await r.exec(['nft', 'delete', 'table', 'ip', tableName(network)]);
  if (res.code === 0) return true;
  if (/No such file or directory|does not exist/i.test(res.stderr)) return false;
  await must(r, ['nft', 'delete', 'table', 'ip', tableName(network)]); // throws, explained
  return false;
}

// ---- reading the kernel's ruleset -----------------------------------------------------------

interface NftChain { family: string; table: string; name: string; type?: string; hook?: string; prio?: number; policy?: string }
interface NftRule { family: string; table: string; chain: string; expr?: unknown[]; handle?: number; comment?: string }
type NftItem = { table?: { family: string; name: string; comment?: string } } | { chain?: NftChain } | { rule?: NftRule } | Record<string, unknown>;

export async function listRuleset(r: Runner): Promise<NftItem[]> {
  const out = await mustJson<{ nftables?: NftItem[] }>(r, ['nft', '-j', 'list', 'ruleset']);
  return out.nftables ?? [];
}

export interface TableInfo {
  exists: boolean;
  chains: string[];
  rules: number;
  /** packets counted by the rules whose verdict is accept/masquerade/dnat/reject, by chain */
  packets: Record<string, number>;
}

/** What the kernel has of the network's table. */
export async function inspectRuleset(r: Runner, network: string): Promise<TableInfo> {
  const res = await r.exec(['nft', '-j', 'list', 'table', 'ip', tableName(network)]);
  if (res.code !== 0) {
    if (/No such file or directory|does not exist/i.test(res.stderr)) return { exists: false, chains: [], rules: 0, packets: {} };
    await must(r, ['nft', '-j', 'list', 'table', 'ip', tableName(network)]);
  }
  const items = (JSON.parse(res.stdout) as { nftables?: NftItem[] }).nftables ?? [];
  const chains: string[] = [];
  const packets: Record<string, number> = {};
  let rules = 0;
  for (const it of items) {
    if ('chain' in it && it.chain) chains.push((it.chain as NftChain).name);
    if ('rule' in it && it.rule) {
      const rule = it.rule as NftRule;
      rules++;
      for (const e of rule.expr ?? []) {
        const c = (e as { counter?: { packets?: number } }).counter;
        if (c && typeof c.packets === 'number') packets[rule.chain] = (packets[rule.chain] ?? 0) + c.packets;
      }
    }
  }
  return { exists: true, chains, rules, packets };
}

/** The tables of the namespace, `family name`. */
export async function listTables(r: Runner): Promise<string[]> {
  const items = await listRuleset(r);
  return items.flatMap((it) => ('table' in it && it.table ? [`${(it.table as { family: string }).family} ${(it.table as { name: string }).name}`] : []));
}

export interface ForeignDrop {
  table: string;
  chain: string;
  hook: string;
  /** 'policy drop' or the number of drop/reject rules */
  what: string;
}

/**
 * Base chains of other tables at the forward and input hooks that drop: a drop there wins over
 * qnet's accepts (every base chain at a hook sees the packet), so guests lose forwarding
 * (forward) or DHCP/DNS to the gateway (input).
 */
export function foreignDrops(items: NftItem[], ours = (table: string) => table.startsWith(TABLE_PREFIX)): ForeignDrop[] {
  const base = new Map<string, NftChain>();
  const out: ForeignDrop[] = [];
  for (const it of items) {
    if (!('chain' in it) || !it.chain) continue;
    const c = it.chain as NftChain;
    if (ours(c.table) || (c.hook !== 'forward' && c.hook !== 'input')) continue;
    base.set(`${c.family} ${c.table} ${c.name}`, c);
    if (c.policy === 'drop') out.push({ table: `${c.family} ${c.table}`, chain: c.name, hook: c.hook, what: 'policy drop' });
  }
  const dropRules = new Map<string, number>();
  for (const it of items) {
    if (!('rule' in it) || !it.rule) continue;
    const rule = it.rule as NftRule;
    const key = `${rule.family} ${rule.table} ${rule.chain}`;
    if (!base.has(key)) continue;
    if ((rule.expr ?? []).some((e) => typeof e === 'object' && e !== null && ('drop' in e || 'reject' in e))) dropRules.set(key, (dropRules.get(key) ?? 0) + 1);
  }
  for (const [key, n] of dropRules) {
    const c = base.get(key)!;
    out.push({ table: `${c.family} ${c.table}`, chain: c.name, hook: c.hook!, what: `${n} drop/reject rule${n === 1 ? '' : 's'}` });
  }
  return out;
}
