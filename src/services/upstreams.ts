// Upstream DNS resolvers of the host: the `nameserver` lines of /etc/resolv.conf, like
// libslirp's get_dns_addr(). A small helper shared by the DNS forwarder and the networks.
import fs from 'node:fs';
import net from 'node:net';

export interface Upstream {
  /** IPv4 or IPv6 literal (no names: resolving the resolver would need a resolver) */
  host: string;
  port: number;
}

/** Parses resolv.conf text; zone ids (%eth0) are dropped, anything not an IP literal skipped. */
export function parseResolvConf(text: string): Upstream[] {
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const host = m[1].replace(/%.*$/, '');
    if (net.isIP(host) && !out.some((u) => u.host === host)) out.push({ host, port: 53 });
  }
  return out;
}

/** The host's resolvers; [] when the file is missing or lists none. */
export function readResolvConf(path = '/etc/resolv.conf'): Upstream[] {
  try {
    return parseResolvConf(fs.readFileSync(path, 'utf8'));
  } catch {
    return [];
  }
}
