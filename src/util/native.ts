// The qnet_sys native addon (native/qnet_sys.c, built by node-gyp during `npm ci` / `npm
// rebuild` because binding.gyp sits at the repository root), loaded once for every layer that
// uses it: the link layer's sockets (link/sys.ts) and the wire layer's checksum. Loading
// never throws here: a missing addon is a reason, and each user decides what that means.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const addonPath = path.join(root, 'build', 'Release', 'qnet_sys.node');
export const repoRoot = root;

let cached: unknown = null;
let failure: string | null = null;

/** The addon's exports, or null (see nativeFailure()). */
export function loadNative<T>(): T | null {
  if (cached) return cached as T;
  if (failure !== null) return null;
  try {
    cached = createRequire(import.meta.url)(addonPath);
    return cached as T;
  } catch (e) {
    failure = e instanceof Error ? e.message.split('\n')[0] : String(e);
    return null;
  }
}

/** Why the addon did not load (null when it did, or was not tried yet). */
export function nativeFailure(): string | null { return failure; }
