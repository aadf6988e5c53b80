// The timer queue on an injected clock: deadlines in order, cheap re-arming, cancellation,
// and a throwing callback that does not stop the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, Timer, TimerQueue } from '../../src/stack/timers.ts';

function bed(): { clock: ManualClock; q: TimerQueue; log: string[]; timer(name: string): Timer } {
  const clock = new ManualClock(0);
  const q = new TimerQueue(clock, { autoRun: false });
  const log: string[] = [];
  return { clock, q, log, timer: (name) => new Timer(() => log.push(`${name}@${clock.t}`)) };
}

test('timers: fire in deadline order, each at its own time', () => {
  const { clock, q, log, timer } = bed();
  q.arm(timer('c'), 30);
  q.arm(timer('a'), 10);
  q.arm(timer('b'), 20);
  q.runUntil(clock, 25);
  assert.deepEqual(log, ['a@10', 'b@20']);
  q.runUntil(clock, 100);
  assert.deepEqual(log, ['a@10', 'b@20', 'c@30']);
  assert.equal(clock.t, 100);
});

test('timers: re-arming later moves the deadline; earlier moves the heap entry', () => {
  const { clock, q, log, timer } = bed();
  const t = timer('t');
  q.arm(t, 10);
  q.arm(t, 50);
  q.runUntil(clock, 40);
  assert.deepEqual(log, [], 'the old entry fired, saw the later deadline and waited');
  q.arm(t, 5); // now 45
  q.runUntil(clock, 100);
  assert.deepEqual(log, ['t@45']);
});

test('timers: a cancelled timer does not fire; arm at t=0 for 0 ms still counts as armed', () => {
  const { clock, q, log, timer } = bed();
  const a = timer('a');
  q.arm(a, 10);
  q.cancel(a);
  assert.equal(a.armed, false);
  const z = timer('z');
  q.arm(z, 0);
  assert.equal(z.armed, true);
  q.runUntil(clock, 20);
  assert.deepEqual(log, ['z@0']);
});

test('timers: a callback that throws is counted and the rest still run', () => {
  const clock = new ManualClock(0);
  const errors: unknown[] = [];
  const q = new TimerQueue(clock, { autoRun: false, onError: (e) => errors.push(e) });
  let ran = false;
  q.arm(new Timer(() => { throw new Error('boom'); }), 1);
  q.arm(new Timer(() => { ran = true; }), 2);
  q.runUntil(clock, 5);
  assert.equal(ran, true);
  assert.equal(q.errors, 1);
  assert.equal((errors[0] as Error).message, 'boom');
});

test('timers: many timers with random deadlines fire sorted (heap property)', () => {
  const { clock, q } = bed();
  const fired: number[] = [];
  let x = 12345;
  for (let i = 0; i < 500; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const ms = 1 + (x % 1000);
    q.arm(new Timer(() => fired.push(clock.t)), ms);
  }
  q.runUntil(clock, 2000);
  assert.equal(fired.length, 500);
  for (let i = 1; i < fired.length; i++) assert.ok(fired[i] >= fired[i - 1]);
});

test('timers: with a real clock the queue drives itself', async () => {
  const q = new TimerQueue();
  const done = new Promise<void>((resolve) => q.arm(new Timer(resolve), 5));
  await done;
  q.close();
});
