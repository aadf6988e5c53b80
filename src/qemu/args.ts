// Splitting a QEMU command line into options, so network options can be
// picked out and everything else passed through untouched and in order.

/** QEMU options that take no argument (qemu-options.hx entries without HAS_ARG). */
const NO_ARG = new Set([
  'S', 's', 'nodefaults', 'enable-kvm', 'no-kvm', 'nographic', 'daemonize', 'snapshot', 'no-reboot', 'no-shutdown',
  'no-user-config', 'full-screen', 'no-acpi', 'no-hpet', 'usb', 'version', 'h', 'help', 'no-fd-bootchk', 'win2k-hack',
  'no-quit', 'alt-grab', 'ctrl-grab', 'curses', 'portrait', 'enable-fips', 'only-migratable', 'preconfig', 'semihosting',
  'singlestep', 'xen-attach', 'rtc-td-hack', 'mem-prealloc', 'old-param', 'no-frame', 'sdl', 'perfmap', 'jitdump',
]);

export const NET_OPTIONS = ['net', 'netdev', 'nic', 'device'] as const;
export type NetOptionName = (typeof NET_OPTIONS)[number];

export type Token =
  /** A network option and its argument. */
  | { kind: 'net'; name: NetOptionName; written: string; value: string; index: number; dash?: string }
  /** Any other option with its argument(s), or a positional argument. */
  | { kind: 'other'; name?: string; args: string[]; index: number; dash?: string; positional?: boolean }
  /** A network option at the end of the line with no argument. */
  | { kind: 'missing'; name: string; written: string; index: number };

/** Dash characters that copy-paste from word processors turns '-' into. */
const FANCY_DASHES = /^([\u2010-\u2015\u2212\uFE63\uFF0D])/;

/** Name of an option token ('-m' -> 'm', '--netdev' -> 'netdev'), with the odd dash it began with, if any. */
export function optionName(tok: string): { name: string; dash?: string } | undefined {
  const fancy = FANCY_DASHES.exec(tok);
  if (fancy && tok.length > 1) return { name: tok.slice(1).replace(/^-/, ''), dash: fancy[1] };
  if (tok.startsWith('--') && tok.length > 2) return { name: tok.slice(2) };
  if (tok.startsWith('-') && tok.length > 1) return { name: tok.slice(1) };
  return undefined;
}

export function tokenize(argv: string[]): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i];
    const opt = optionName(tok);
    if (!opt) {
      out.push({ kind: 'other', args: [tok], index: i, positional: true });
      continue;
    }
    if ((NET_OPTIONS as readonly string[]).includes(opt.name)) {
      if (i + 1 >= argv.length) {
        out.push({ kind: 'missing', name: opt.name, written: tok, index: i });
        continue;
      }
      out.push({ kind: 'net', name: opt.name as NetOptionName, written: tok, value: argv[i + 1], index: i, ...(opt.dash ? { dash: opt.dash } : {}) });
      i++;
      continue;
    }
    if (opt.dash && !/^[a-z]/.test(opt.name)) {
      out.push({ kind: 'other', args: [tok], index: i, positional: true });
      continue;
    }
    if (NO_ARG.has(opt.name) || i + 1 >= argv.length) {
      out.push({ kind: 'other', name: opt.name, args: [tok], index: i, ...(opt.dash ? { dash: opt.dash } : {}) });
    } else {
      out.push({ kind: 'other', name: opt.name, args: [tok, argv[i + 1]], index: i, ...(opt.dash ? { dash: opt.dash } : {}) });
      i++;
    }
  }
  return out;
}

/** Split a pasted shell command line into words (quotes, backslashes, line continuations). */
export function shellSplit(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let have = false;
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === '\\' && line[i + 1] === '\n') { i += 2; continue; }
    if (c === '\\' && i + 1 < line.length) { cur += line[i + 1]; have = true; i += 2; continue; }
    if (c === "'") {
      const j = line.indexOf("'", i + 1);
      const end = j < 0 ? line.length : j;
      cur += line.slice(i + 1, end); have = true; i = end + 1; continue;
    }
    if (c === '"') {
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) { cur += line[i + 1]; i += 2; continue; }
        cur += line[i++];
      }
      i++; have = true; continue;
    }
    if (/\s/.test(c)) {
      if (have) { words.push(cur); cur = ''; have = false; }
      i++; continue;
    }
    if (c === '#' && !have) {
      while (i < line.length && line[i] !== '\n') i++;
      continue;
    }
    cur += c; have = true; i++;
  }
  if (have) words.push(cur);
  return words;
}

/** Quote a word for a POSIX shell only when needed. */
export function shellQuote(w: string): string {
  if (w !== '' && /^[A-Za-z0-9_@%+=:,./~-]+$/.test(w)) return w;
  return `'${w.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(argv: string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** Drop a leading shell prompt and program name (qemu-system-x86_64, qemu-kvm, kvm, possibly after sudo). */
export function stripProgram(argv: string[]): { program?: string; args: string[] } {
  const PROGRAM = /(^|\/)(qemu-system-[\w-]+|qemu-kvm|kvm|qemu)$/;
  for (let i = 0; i < Math.min(argv.length, 6); i++) {
    if (argv[i].startsWith('-')) break;
    if (PROGRAM.test(argv[i])) return { program: argv[i], args: argv.slice(i + 1) };
  }
  return { args: argv };
}
