// The sysfs symlinks the device-assignment test compares between the real kernel (inside the
// SR-IOV guest, test/helpers/sriov-driver.ts) and the fixture trees (test/host/fake-kernel.ts),
// so the fixtures stay laid out as Linux lays them out.

/** sysfs symlinks (relative to /sys) whose targets the fixture trees must reproduce */
export const LAYOUT = (pf: string, vf: string, ifname: string, vfGroup: string): string[] => [
  `bus/pci/devices/${pf}`, `bus/pci/devices/${pf}/driver`, `bus/pci/devices/${pf}/iommu_group`, `bus/pci/devices/${pf}/subsystem`,
  `bus/pci/devices/${pf}/virtfn0`, `bus/pci/devices/${pf}/virtfn1`, `bus/pci/devices/${pf}/net/${ifname}/device`, `bus/pci/devices/${pf}/net/${ifname}/subsystem`,
  `bus/pci/devices/${vf}`, `bus/pci/devices/${vf}/physfn`, `bus/pci/devices/${vf}/driver`, `bus/pci/devices/${vf}/iommu_group`,
  `bus/pci/drivers/igb/${pf}`, `bus/pci/drivers/igbvf/${vf}`, `bus/pci/drivers/igb/module`,
  `kernel/iommu_groups/${vfGroup}/devices/${vf}`, `class/net/${ifname}`, 'class/iommu/dmar0',
];
