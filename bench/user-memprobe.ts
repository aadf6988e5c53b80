// Preloaded into the qnet process by bench/user.ts (node --expose-gc --import ./bench/user-memprobe.ts):
// on SIGUSR2, collect garbage and print the process's memory use as one line on stderr.
process.on('SIGUSR2', () => {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  process.stderr.write(`MEMPROBE ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers })}\n`);
});
