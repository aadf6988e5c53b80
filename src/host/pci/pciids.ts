// PCI vendor, device and class names from the pci.ids database (Debian's `pci.ids` package,
// /usr/share/misc/pci.ids; `hwdata` ships the same file as /usr/share/hwdata/pci.ids).
//
// The file is ~1.3 MB of lines:
//   vendor  vendor_name                  8086  Intel Corporation
//   \tdevice  device_name                \t10ca  82576 Virtual Function
//   \t\tsubvendor subdevice  name        \t\t8086 0001  ...
//   C class  class_name                  C 02  Network controller
//   \tsubclass  subclass_name            \t00  Ethernet controller
//   \t\tprog-if  prog-if_name
// It is read once, on first use, into maps keyed by lower-case hex; a missing file gives an
// empty database (names are a convenience: listings fall back to the numeric IDs).
import fs from 'node:fs';

export const PCI_IDS_PATHS = ['/usr/share/misc/pci.ids', '/usr/share/hwdata/pci.ids', '/usr/share/pci.ids'];

export class PciIds {
  private readonly vendors = new Map<string, string>();
  private readonly devices = new Map<string, string>();
  private readonly subsystems = new Map<string, string>();
  private readonly classes = new Map<string, string>();

  /** the file it was read from ('' for none) */
  constructor(text: string, readonly file = '') {
    let vendor = '';
    let device = '';
    let cls = '';
    let inClasses = false;
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      let m: RegExpExecArray | null;
      if ((m = /^C ([0-9a-fA-F]{2})\s+(.*)$/.exec(line))) {
        inClasses = true;
        cls = m[1].toLowerCase();
        this.classes.set(cls, m[2].trim());
      } else if ((m = /^([0-9a-fA-F]{4})\s+(.*)$/.exec(line))) {
        inClasses = false;
        vendor = m[1].toLowerCase();
        this.vendors.set(vendor, m[2].trim());
      } else if ((m = /^\t([0-9a-fA-F]{2,4})\s+(.*)$/.exec(line))) {
        if (inClasses) this.classes.set(`${cls}${m[1].toLowerCase()}`, m[2].trim());
        else if (vendor) { device = m[1].toLowerCase(); this.devices.set(`${vendor}:${device}`, m[2].trim()); }
      } else if (!inClasses && (m = /^\t\t([0-9a-fA-F]{4})\s+([0-9a-fA-F]{4})\s+(.*)$/.exec(line))) {
        this.subsystems.set(`${vendor}:${device}:${m[1].toLowerCase()}:${m[2].toLowerCase()}`, m[3].trim());
      }
    }
  }

  get empty(): boolean { return this.vendors.size === 0; }

  vendor(v: string): string | undefined { return this.vendors.get(v.toLowerCase()); }
  device(v: string, d: string): string | undefined { return this.devices.get(`${v}:${d}`.toLowerCase()); }
  subsystem(v: string, d: string, sv: string, sd: string): string | undefined { return this.subsystems.get(`${v}:${d}:${sv}:${sd}`.toLowerCase()); }

  /** '020000' -> 'Ethernet controller' (the subclass name, else the class name) */
  className(classCode: string): string | undefined {
    const c = classCode.toLowerCase().replace(/^0x/, '').padStart(6, '0');
    return this.classes.get(c.slice(0, 4)) ?? this.classes.get(c.slice(0, 2));
  }
}

let cached: PciIds | undefined;

/** The system's pci.ids ($QNET_PCI_IDS, else the first of PCI_IDS_PATHS that exists). */
export function systemPciIds(): PciIds {
  if (cached) return cached;
  const candidates = process.env.QNET_PCI_IDS ? [process.env.QNET_PCI_IDS] : PCI_IDS_PATHS;
  for (const f of candidates) {
    try {
      cached = new PciIds(fs.readFileSync(f, 'utf8'), f);
      return cached;
    } catch { /* next */ }
  }
  cached = new PciIds('', '');
  return cached;
}
