// The SR-IOV test bed (testbed/build-sriov-guest.sh): a TCG guest on Debian's generic kernel,
// booted by a QEMU (>= 8.0, from bookworm-backports) that emulates an SR-IOV NIC (igb, an
// 82576 with 7 VFs) behind an emulated Intel IOMMU with interrupt remapping, the host's root
// file system shared read-only over virtio-9p as the guest's / (so the guest runs this very
// checkout of qnet, the host's node, ip and QEMU 7.2).
//
//   const bed = await sriovBed();           // { skip: reason } when it is not built
//   const g = await bootSriovGuest(bed, 'node ...');
//
// The bed is only read here (--no-fetch): scripts/ensure-test-deps.sh (npm test's pretest)
// downloads and unpacks it; a test that finds it missing skips and says why.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { bootGuest, type Guest } from './guest.ts';
import { repoRoot } from './user-net.ts';

export interface SriovBed { qemu: string; kernel: string; initrd: string; version: string }

function exec(cmd: string, args: string[], timeoutMs = 600_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 8 << 20 }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr });
    });
  });
}

let bed: Promise<SriovBed | { skip: string }> | undefined;

/** The built test bed, or why there is none. */
export function sriovBed(): Promise<SriovBed | { skip: string }> {
  bed ??= (async () => {
    const r = await exec('bash', [join(repoRoot, 'testbed', 'build-sriov-guest.sh'), '--no-fetch']);
    if (r.code !== 0) return { skip: `no SR-IOV test bed: ${r.stderr.trim().split('\n').pop()}` };
    const out = Object.fromEntries(r.stdout.trim().split('\n').map((l) => { const i = l.indexOf(' '); return [l.slice(0, i), l.slice(i + 1)]; }));
    const v = await exec(out.qemu, ['--version'], 30_000);
    const m = /version (\d+)\.(\d+)/.exec(v.stdout);
    if (!m || Number(m[1]) < 8) return { skip: `the test bed's QEMU (${v.stdout.split('\n')[0] || v.stderr.trim()}) has no igb device (needs 8.0 or later)` };
    const igb = await exec(out.qemu, ['-device', 'igb,help'], 30_000);
    if (igb.code !== 0) return { skip: `the test bed's QEMU cannot emulate igb: ${igb.stderr.trim().split('\n').pop()}` };
    return { qemu: out.qemu, kernel: out.kernel, initrd: out.initrd, version: v.stdout.split('\n')[0] };
  })();
  return bed;
}

/**
 * Boot the SR-IOV guest running `script` (sh, in the host's root as /, cwd /tmp; tmpfs on
 * /tmp, /run, /var/tmp, /var/lib and /root). TCG always: the vIOMMU and nested vfio are
 * emulated, and this project's machine has no usable KVM.
 */
export function bootSriovGuest(b: SriovBed, script: string, o: { timeoutMs?: number; memoryMb?: number } = {}): Promise<Guest> {
  return bootGuest({
    name: 'sriov',
    qemu: b.qemu,
    image: { kernel: b.kernel, initrd: b.initrd },
    accel: 'tcg',
    memoryMb: o.memoryMb ?? 1536,
    timeoutMs: o.timeoutMs ?? 1_440_000,
    // no_timer_check: on a loaded host TCG's timer ticks can miss the kernel's early check
    // that the timer interrupt works, and with interrupt remapping on that check panics
    // ("timer doesn't work through Interrupt-remapped IO-APIC") instead of falling back
    append: 'intel_iommu=on no_timer_check',
    netArgs: [],
    extraArgs: [
      '-M', 'q35,kernel-irqchip=split',
      // the vIOMMU first: devices created before it would bypass it
      '-device', 'intel-iommu,intremap=on',
      '-device', 'pcie-root-port,id=rp0,chassis=1',
      // no peer: the NIC's wire goes nowhere (nothing leaves this machine); romfile= skips a boot ROM
      '-device', 'igb,bus=rp0,romfile=',
      '-fsdev', 'local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap',
      '-device', 'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
    ],
    script,
  });
}
