// Where the daemon keeps its runtime files (API socket, per-VM sockets) and its state (MACs,
// leases, VM records). The CLI uses the same functions to find a running daemon.
import os from 'node:os';
import path from 'node:path';

function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : -1;
}

/**
 * `${XDG_RUNTIME_DIR}/qnet` when XDG_RUNTIME_DIR is set, else `/run/qnet` for root,
 * else `/tmp/qnet-$UID` (created 0700 by the daemon; refused if another user owns it).
 */
export function defaultRuntimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'qnet');
  if (uid() === 0) return '/run/qnet';
  return path.join(os.tmpdir(), `qnet-${uid()}`);
}

/** `${XDG_STATE_HOME:-~/.local/state}/qnet` for users, `/var/lib/qnet` for root. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (uid() === 0) return '/var/lib/qnet';
  const base = env.XDG_STATE_HOME || path.join(env.HOME || os.homedir(), '.local', 'state');
  return path.join(base, 'qnet');
}

/** The API socket inside the runtime directory. */
export function defaultApiSocket(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(defaultRuntimeDir(env), 'api.sock');
}
