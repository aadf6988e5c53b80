// Public surface of the QEMU command-line front end.
export { parseUserNetdev, parseHostFwd, parseGuestFwd, type UserNetdevConfig, type HostFwd, type GuestFwd, type GuestFwdTarget, type ParseUserResult } from './user-options.ts';
export { parseQemuOpts, formatQemuOpts, type OptEntry, type ParsedOpts } from './opts.ts';
export { analyze, errorCount, type Analysis, type Diagnostic, type Nic, type Netdev } from './analyze.ts';
export { convert, type ConvertOutput } from './convert.ts';
export { explain, type Explanation } from './explain.ts';
export { adopt, defaultSocketDir, type AdoptOutput } from './adopt.ts';
export { lint, formatDiagnostic, type LintOutput } from './lint.ts';
export { BACKENDS, NIC_MODELS, machineInfo } from './model.ts';
