// Process-exit cleanup shared by the test-bed helpers.
//
// Cleanup functions must be synchronous: they run from process.on('exit'), where
// the event loop no longer turns.  They also run on SIGINT/SIGTERM/SIGHUP (after
// which the process exits with 128+signal unless somebody else handles the signal).

import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type SyncCleanup = () => void;

const cleanups = new Map<number, SyncCleanup>();
let nextId = 1;
let installed = false;
let ran = false;

function runAll(): void {
  if (ran) return;
  ran = true;
  // newest first, like a stack: guests before the namespaces they live in
  const fns = [...cleanups.entries()].sort((a, b) => b[0] - a[0]).map(([, fn]) => fn);
  cleanups.clear();
  for (const fn of fns) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
}

const signalNumbers: Record<string, number> = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 };

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const sig of Object.keys(signalNumbers) as NodeJS.Signals[]) {
    const handler = (): void => {
      runAll();
      if (process.listenerCount(sig) <= 1) process.exit(128 + (signalNumbers[sig] ?? 0));
    };
    process.on(sig, handler);
  }
}

/** Register a synchronous cleanup to run at process exit; returns an unregister function. */
export function onExit(fn: SyncCleanup): () => void {
  install();
  const id = nextId++;
  cleanups.set(id, fn);
  return () => {
    cleanups.delete(id);
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let staleSwept = false;
/** Remove `<tmpdir>/qnet-tb-<pid>-*` directories left by test processes that were SIGKILLed. */
export function cleanupStaleTempDirs(): void {
  staleSwept = true;
  let entries: string[] = [];
  try {
    entries = readdirSync(tmpdir());
  } catch {
    return;
  }
  for (const e of entries) {
    const m = /^qnet-tb-(\d+)-/.exec(e);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) {
      rmSync(join(tmpdir(), e), { recursive: true, force: true });
    }
  }
}

/**
 * A fresh temp directory `<tmpdir>/qnet-tb-<pid>-<prefix>XXXXXX`, removed at process exit unless
 * removed earlier (stale ones of dead processes are swept on first use).
 */
export function makeTempDir(prefix = 'tmp-'): { path: string; remove: () => void } {
  if (!staleSwept) cleanupStaleTempDirs();
  const path = mkdtempSync(join(tmpdir(), `qnet-tb-${process.pid}-${prefix}`));
  let unregister: () => void = () => {};
  const remove = (): void => {
    unregister();
    rmSync(path, { recursive: true, force: true });
  };
  unregister = onExit(() => rmSync(path, { recursive: true, force: true }));
  return { path, remove };
}
