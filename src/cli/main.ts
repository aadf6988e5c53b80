// qnet's command-line entry: dispatches the first word to a subcommand module.
const USAGE = `usage: qnet <command> [options]

commands:
  up       run the qnet daemon: every configured network and the control API
  switch   run a bare L2 switch that QEMU guests join over socket netdevs
  user     run a user-mode network (QEMU's -netdev user, served by qnet)
  qemu     lint, explain, convert and adopt QEMU network options
  host     PCI devices, vfio-pci binding and SR-IOV VFs for device assignment (host devices|vfio|sriov|vf)
  doctor   what blocks QEMU's networking and device assignment on this host (tun, vhost, KVM,
           bridge helper, firewall; IOMMU, interrupt remapping, vfio, SR-IOV)
  bridge-acl  QEMU's bridge helper ACL (/etc/qemu/bridge.conf): check, allow, deny

daemon commands (talk to the daemon over its API socket; --api PATH or $QNET_API picks it):
  status   the daemon's version, uptime, directories, networks and warnings
  net      list networks (net ls) or show one (net show NAME)
  leases   DHCP leases of one or all networks
  forward  add, remove and list host port forwards (forward add|rm|ls)
  capture  write a network's traffic to a pcap file
  attach   print the QEMU arguments that put a VM on a network
  run      run QEMU with a NIC on a network (qnet run NET -- qemu-system-x86_64 ...)
  vm       list VMs started by qnet run (vm ls), set their link (vm link)
  info     QEMU's own view of the VMs' NICs (info network)

for QEMU itself (kernel networks, bin/qnet-bridge-helper, bin/qnet-ifup, bin/qnet-ifdown):
  bridge-helper  QEMU's bridge-helper protocol (-netdev bridge,helper=...), no setuid needed
  ifup, ifdown   QEMU's script=/downscript= for -netdev tap: the tap onto a network's bridge
  help     show this text
`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  up: async () => (await import('./up.ts')).main,
  switch: async () => (await import('./switch.ts')).main,
  user: async () => (await import('./user.ts')).main,
  qemu: async () => (await import('./qemu.ts')).main,
  host: async () => (await import('./host.ts')).main,
  status: async () => (await import('./status.ts')).main,
  net: async () => (await import('./net.ts')).main,
  leases: async () => (await import('./leases.ts')).main,
  forward: async () => (await import('./forward.ts')).main,
  capture: async () => (await import('./capture.ts')).main,
  attach: async () => (await import('./attach.ts')).main,
  run: async () => (await import('./run.ts')).main,
  vm: async () => (await import('./vm.ts')).main,
  info: async () => (await import('./info.ts')).main,
  doctor: async () => (await import('./doctor.ts')).main,
  'bridge-acl': async () => (await import('./bridge-acl.ts')).main,
  'bridge-helper': async () => (await import('./bridge-helper.ts')).main,
  ifup: async () => (await import('./ifup.ts')).ifup,
  ifdown: async () => (await import('./ifup.ts')).ifdown,
};

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const load = commands[cmd];
  if (!load) {
    process.stderr.write(`qnet: unknown command '${cmd}'\n${USAGE}`);
    return 2;
  }
  return (await load())(rest);
}

run(process.argv.slice(2)).then(
  (code) => { if (code !== 0) process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`qnet: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
