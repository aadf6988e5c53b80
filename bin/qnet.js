#!/usr/bin/env node
// qnet runs from its TypeScript sources through tsx's loader: no build step, so
// `npm ci && npx qnet ...` works on a fresh clone.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
